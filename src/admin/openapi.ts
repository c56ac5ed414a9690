// The OpenAPI 3.1 document of the admin endpoint, made from the routes themselves: the
// bodies' schemas are the ones requests are checked against, so the document cannot drift.
import type { ApiRoute } from './api.ts';
import { ErrorBody } from './schemas.ts';

export function openApiDocument(routes: readonly ApiRoute[]): object {
  const paths: Record<string, Record<string, object>> = {};
  for (const r of routes) {
    const params = [...r.path.matchAll(/\{(\w+)\}/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
    const query = Object.entries(r.query ?? {}).map(([name, description]) => ({ name, in: 'query', required: false, description, schema: { type: 'string' } }));
    const ok = r.produces ? { content: { [r.produces]: { schema: { type: 'string' } } } } : { content: { 'application/json': { schema: r.response ?? {} } } };
    const error = { description: 'refused: nothing changed', content: { 'application/json': { schema: ErrorBody } } };
    (paths[r.path] ??= {})[r.method.toLowerCase()] = {
      summary: r.summary,
      ...(params.length + query.length > 0 ? { parameters: [...params, ...query] } : {}),
      ...(r.body ? { requestBody: { required: true, content: { 'application/json': { schema: r.body } } } } : {}),
      responses: {
        '200': { description: 'done', ...ok },
        ...(r.method !== 'GET' || params.length > 0 ? { '400': error, '404': error } : {}),
        ...(r.method !== 'GET' || r.sensitive ? { '401': error } : {}),
        '403': { ...error, description: 'a request a web page in a browser made, to a TCP listener: refused' },
        // The others a route may give, with the same body: 400 for a bad query on a read, 404
        // for a stage not in the pipeline, 405, 408, 409 (commit-confirmed, a capture running),
        // 413, 431, 500 (VR_SAVE, VR_APPLIED_PARTLY: in force, a later step failed;
        // VR_INTERNAL), 503 (an upgrade; a change once vrouter stops).
        default: { description: 'another error: the code says which (see the README\'s list)', content: { 'application/json': { schema: ErrorBody } } },
      },
      ...(r.method !== 'GET' || r.sensitive ? { security: [{ bearer: [] }, {}] } : {}),
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'vrouter admin endpoint', version: '1', description: 'Reads and changes a running vrouter. Changes need the bearer token of admin.tokenFile when one is set.' },
    components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    paths,
  };
}
