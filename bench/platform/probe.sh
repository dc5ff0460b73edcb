#!/usr/bin/env bash
# The stores' own counters, as `name value` lines: what `platform-load run --probe` reads at the
# edges of each measured window (scripts/bench-platform sets the variables).
#   FalkorDB (BP_FALKORDB_PORT): its GRAPH.* commands, calls and server-side microseconds.
#   Redis (BP_REDIS_PORT): every command's calls and microseconds, and MGET's, EVALSHA's, GET's.
#     The server is shared with whatever else uses the stack (the tests use database 0, the
#     benchmark its own database): these are server-wide.
#   PostgreSQL (BP_PG_URL, the benchmark's own database): transactions (each autocommit statement
#     is one), rows returned and fetched, and the time backends spent executing statements
#     (pg_stat_database.active_time, ms), as the server last flushed them (about once a second).
set -uo pipefail
host=127.0.0.1

redis-cli -h "$host" -p "$BP_FALKORDB_PORT" INFO commandstats 2>/dev/null | tr -d '\r' |
  awk -F'[:,=]' '/^cmdstat_graph\./ {
    name = tolower(substr($1, 9)); gsub(/\./, "_", name)
    print "falkordb_" name "_calls " $3; print "falkordb_" name "_usec " $5 }'

redis-cli -h "$host" -p "$BP_REDIS_PORT" INFO commandstats 2>/dev/null | tr -d '\r' |
  awk -F'[:,=]' '/^cmdstat_/ {
    calls += $3; usec += $5
    name = tolower(substr($1, 9))
    if (name == "mget" || name == "evalsha" || name == "get" || name == "set") {
      print "redis_" name "_calls " $3; print "redis_" name "_usec " $5 }
  } END { print "redis_calls " calls + 0; print "redis_usec " usec + 0 }'

psql "$BP_PG_URL" -XAtF ' ' -c "SELECT 'pg_transactions', xact_commit + xact_rollback
  FROM pg_stat_database WHERE datname = current_database()
  UNION ALL SELECT 'pg_rows_returned', tup_returned FROM pg_stat_database WHERE datname = current_database()
  UNION ALL SELECT 'pg_rows_fetched', tup_fetched FROM pg_stat_database WHERE datname = current_database()
  UNION ALL SELECT 'pg_active_ms', active_time::bigint FROM pg_stat_database WHERE datname = current_database()" 2>/dev/null
