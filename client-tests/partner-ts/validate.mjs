// Validates every operation of a folder (default ../operations/partner) against the schema of
// an introspection answer (default generated/partner.introspection.json), with graphql-js: the
// document by the spec's validation rules, and its `<Name>.variables.json`, if any, coerced
// against the operation's variable definitions. Exits 1 naming each problem.
//
//   node validate.mjs [operations folder] [introspection file]
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { buildClientSchema, getVariableValues, Kind, parse, validate } from 'graphql';

const dir = process.argv[2] ?? '../operations/partner';
const introspection = process.argv[3] ?? 'generated/partner.introspection.json';
const answer = JSON.parse(readFileSync(introspection, 'utf8'));
const schema = buildClientSchema(answer.data ?? answer);

const files = readdirSync(dir).filter((name) => name.endsWith('.graphql')).sort();
if (files.length === 0) {
  console.error(`no operations in ${dir}`);
  process.exit(1);
}
const problems = [];
for (const file of files) {
  const path = join(dir, file);
  let document;
  try {
    document = parse(readFileSync(path, 'utf8'));
  } catch (error) {
    problems.push(`${path}: ${error.message}`);
    continue;
  }
  for (const error of validate(schema, document)) {
    const at = (error.locations ?? []).map((l) => `${l.line}:${l.column}`).join(', ');
    problems.push(`${path}${at ? `:${at}` : ''}: ${error.message}`);
  }
  const variablesPath = path.replace(/\.graphql$/, '.variables.json');
  if (existsSync(variablesPath)) {
    const inputs = JSON.parse(readFileSync(variablesPath, 'utf8'));
    for (const definition of document.definitions) {
      if (definition.kind !== Kind.OPERATION_DEFINITION) continue;
      const coerced = getVariableValues(schema, definition.variableDefinitions ?? [], inputs);
      for (const error of coerced.errors ?? []) {
        problems.push(`${variablesPath}: ${error.message}`);
      }
    }
  }
}
if (problems.length > 0) {
  console.error(`${problems.length} problem(s) against the partner contract:\n${problems.join('\n')}`);
  process.exit(1);
}
console.log(`${files.length} partner operations valid against the partner contract: ${files.join(', ')}`);
