-- Each domain owns one PostgreSQL schema, so that in Phase 2 a subgraph can be given its own
-- database role (or database) without touching another domain's tables.
CREATE SCHEMA IF NOT EXISTS accounts;
CREATE SCHEMA IF NOT EXISTS billing;
CREATE SCHEMA IF NOT EXISTS study;
CREATE SCHEMA IF NOT EXISTS notifications;
CREATE SCHEMA IF NOT EXISTS registry;
