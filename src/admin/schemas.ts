// The request bodies of the admin endpoint, as TypeBox schemas: the same definitions check
// the bodies and describe them in the OpenAPI document (JSON Schema 2020-12, which OpenAPI
// 3.1 uses as it is). PUT /config and POST /ports take the config's own schema
// (control/config-schema.ts), the one the config file is checked against. TypeBox, because
// its schemas are plain JSON Schema objects with TypeScript types derived from them, and it
// validates them itself: one library, no copy of a schema in another language to keep in step.
import { Compile, Type, type Static, type TSchema } from '../control/typebox.ts';
import { ConfigDocument, PortEntry } from '../control/config.ts';
import { firstViolation, type SchemaViolation } from '../control/schema-violation.ts';
import { ApiError } from './http.ts';

const Address = Type.String({ description: 'an IPv4 or IPv6 address', examples: ['10.0.2.2'] });

export const RouteBody = Type.Object(
  {
    prefix: Type.String({ description: 'the destination prefix, host bits zero', examples: ['192.0.2.0/24'] }),
    via: Type.Optional(Type.Union([Address, Type.Array(Address, { minItems: 1 })], { description: 'the gateway, or several (ECMP)' })),
    port: Type.Optional(Type.String({ description: 'the port or bridge the gateway (or, without via, the prefix) is on' })),
    metric: Type.Optional(Type.Integer({ minimum: 0, description: 'lower wins among routes to one prefix' })),
    blackhole: Type.Optional(Type.Boolean({ description: 'drop what goes there' })),
  },
  { additionalProperties: false },
);
export type RouteBody = Static<typeof RouteBody>;

export const RouteBatchBody = Type.Object(
  {
    add: Type.Optional(Type.Array(RouteBody, { description: 'static routes to add' })),
    remove: Type.Optional(Type.Array(Type.String(), { description: 'prefixes whose static routes go (removed before the additions)' })),
  },
  { additionalProperties: false },
);

export const NeighbourBody = Type.Object(
  {
    address: Address,
    mac: Type.String({ description: 'its MAC', examples: ['52:54:00:00:02:02'] }),
    port: Type.String({ description: 'the port it is on' }),
  },
  { additionalProperties: false },
);
export type NeighbourBody = Static<typeof NeighbourBody>;

export const AclBody = Type.Object(
  {
    rules: Type.Array(Type.Record(Type.String(), Type.Unknown()), { description: 'the ordered rules, as the config\'s "acl"' }),
    default: Type.Optional(Type.Union([Type.Literal('permit'), Type.Literal('deny'), Type.Literal('reject')], { description: 'for packets no rule matches' })),
  },
  { additionalProperties: false },
);
export type AclBody = Static<typeof AclBody>;

/** A port, as an entry of the config's "ports": the config's own schema, not a copy. */
export const PortBody = PortEntry;

export const QueueMoveBody = Type.Object(
  { cpu: Type.Integer({ minimum: 0, description: 'the CPU of the PMD that is to poll the queue pair' }) },
  { additionalProperties: false },
);

export const ConfigBody = ConfigDocument;

export const ErrorBody = Type.Object({
  error: Type.Object({
    code: Type.String({ description: 'stable: VR_CONFIG, VR_INVALID, VR_BAD_JSON, VR_BAD_REQUEST, VR_NOT_FOUND, VR_METHOD, VR_UNAUTHORIZED, VR_FORBIDDEN, VR_TOO_LARGE, VR_TIMEOUT, VR_NEEDS_RESTART, VR_PORT, VR_ROLLED_BACK, VR_UNCONFIRMED, VR_SAVE, VR_BUSY, VR_UPGRADE, VR_APPLIED_PARTLY, VR_INTERNAL' }),
    field: Type.String({ description: 'the field at fault, as in the config ("routes[2].via"), or empty' }),
    message: Type.String(),
  }),
});

export const ApplyResultBody = Type.Object({
  mode: Type.Union([Type.Literal('none'), Type.Literal('live'), Type.Literal('restart')], { description: 'none: nothing changed; live: the PMDs switched tables; restart: they restart on new plugin versions, or on a new layout of ports and queues' }),
  plugins: Type.Array(Type.String()),
  diff: Type.Array(Type.Record(Type.String(), Type.Unknown())),
  dryRun: Type.Boolean(),
  rollbackInSeconds: Type.Optional(Type.Number()),
});

const compiled = new Map<TSchema, ReturnType<typeof Compile>>();

/**
 * Bodies that are config are refused in the config's words, as the file would be, with the
 * codes they had when only the config checked their values: a whole document is VR_CONFIG
 * unless it is no object at all; a port entry of the wrong shape (an unknown or missing key,
 * another JSON type) is VR_INVALID like any body, a value the config refuses VR_CONFIG.
 */
const CONFIG_BODY_CODES = new Map<TSchema, (v: SchemaViolation) => string>([
  [ConfigBody, (v) => (v.field === '' ? 'VR_INVALID' : 'VR_CONFIG')],
  [PortBody, (v) => (v.shape ? 'VR_INVALID' : 'VR_CONFIG')],
]);

/** Checks a body against its schema; a mismatch is a 400 naming the first field at fault. */
export function checkBody<T extends TSchema>(schema: T, value: unknown): Static<T> {
  let validator = compiled.get(schema);
  if (validator === undefined) {
    validator = Compile(schema);
    compiled.set(schema, validator);
  }
  if (value === undefined) throw new ApiError(400, 'VR_INVALID', '', 'the request needs a JSON body');
  if (validator.Check(value)) return value as Static<T>;
  // The field at fault as the request names it: a missing key by its own name, a union by
  // what it asks for as a whole (schema-violation.ts, as the config's checks do).
  const violation = firstViolation(validator, value)!;
  throw new ApiError(400, CONFIG_BODY_CODES.get(schema)?.(violation) ?? 'VR_INVALID', violation.field, violation.reason);
}
