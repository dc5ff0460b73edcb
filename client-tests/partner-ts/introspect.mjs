// Introspects the partner contract as a partner does: the standard introspection query sent to
// the router's /graphql with a partner API key (`x-api-key`). The answer must build a client
// schema with graphql-js (`buildClientSchema`); it is written as generated/partner.introspection.json
// (what GraphQL Code Generator reads) and, printed, as generated/partner.graphql.
//
//   GOSPELIB_PARTNER_URL=http://127.0.0.1:4000/graphql GOSPELIB_PARTNER_KEY=glpk_… node introspect.mjs
import { mkdirSync, writeFileSync } from 'node:fs';
import { buildClientSchema, getIntrospectionQuery, printSchema } from 'graphql';

const url = process.env.GOSPELIB_PARTNER_URL;
const key = process.env.GOSPELIB_PARTNER_KEY;
if (!url || !key) {
  console.error('set GOSPELIB_PARTNER_URL (the router\'s /graphql) and GOSPELIB_PARTNER_KEY (a partner API key)');
  process.exit(2);
}

const response = await fetch(url, {
  method: 'POST',
  headers: {
    'content-type': 'application/json',
    accept: 'application/graphql-response+json',
    'x-api-key': key,
  },
  body: JSON.stringify({ query: getIntrospectionQuery({ descriptions: true }), operationName: 'IntrospectionQuery' }),
});
const text = await response.text();
let body;
try {
  body = JSON.parse(text);
} catch {
  console.error(`introspection: HTTP ${response.status}, not JSON: ${text.slice(0, 500)}`);
  process.exit(1);
}
if (response.status !== 200 || body.errors || !body.data) {
  console.error(`introspection: HTTP ${response.status}: ${JSON.stringify(body, null, 2).slice(0, 2000)}`);
  process.exit(1);
}

const schema = buildClientSchema(body.data);
mkdirSync('generated', { recursive: true });
writeFileSync('generated/partner.introspection.json', JSON.stringify(body, null, 2) + '\n');
writeFileSync('generated/partner.graphql', printSchema(schema) + '\n');
const roots = Object.keys(schema.getQueryType().getFields());
const types = Object.keys(schema.getTypeMap()).filter((name) => !name.startsWith('__'));
console.log(
  `partner contract (supergraph ${body.extensions?.supergraphVersion ?? '?'}): ` +
    `${types.length} types, Query { ${roots.join(', ')} }` +
    `${schema.getMutationType() ? ', a Mutation type' : ', no mutations'}`,
);
