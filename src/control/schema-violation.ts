// A value's first mistake against a TypeBox schema, in the config's words: the field as the
// config names it (ports[1].mtu, pmd.cores[0], plugins.dscp.path) and a reason that names the
// value, phrased from the constraint it broke or from the schema's `errorMessage`.
import type { Validator } from './typebox.ts';

export interface SchemaViolation {
  /** the field at fault, as the config names it; '' for the whole value */
  field: string;
  /** why, naming the value: "must be an integer from 68 to 9000, got 20" */
  reason: string;
  /** the value is not of the schema's shape (another JSON type, an unknown or a missing key), rather than one it refuses */
  shape: boolean;
}

type SchemaNode = Record<string, unknown>;

/** The first field at fault (the most specific error there), or null when the value passes. */
export function firstViolation(validator: Validator, value: unknown): SchemaViolation | null {
  // The compiled check first: a valid document (every config applied) costs no error walk.
  if (validator.Check(value)) return null;
  let errors = validator.Errors(value);
  if (errors.length === 0) return null;
  const root = validator.Type() as unknown as SchemaNode;
  let encloses = enclosing(errors[0]);
  let error = errors.filter(encloses).sort((a, b) => a.schemaPath.length - b.schemaPath.length)[0];
  // A union whose branches are told apart by "type": the branch the value names is the one it broke.
  const branch = error.keyword === 'anyOf' ? taggedBranch(schemaAt(root, error.schemaPath), valueAt(value, pointerKeys(error.instancePath))) : -1;
  if (branch >= 0) {
    const within = `${error.schemaPath}/anyOf/${branch}`;
    const inner = errors.filter((e) => e.schemaPath === within || e.schemaPath.startsWith(`${within}/`));
    if (inner.length > 0) {
      errors = inner;
      encloses = enclosing(inner[0]);
      error = inner.filter(encloses).sort((a, b) => a.schemaPath.length - b.schemaPath.length)[0];
    }
  }
  const path = pointerKeys(error.instancePath);
  const node = schemaAt(root, error.schemaPath);

  if (error.keyword === 'boolean' && error.schemaPath.endsWith('/additionalProperties')) {
    return { field: fieldName(value, path), reason: unknownKey(schemaAt(root, error.schemaPath.slice(0, -'/additionalProperties'.length))), shape: true };
  }
  if (error.keyword === 'additionalProperties') {
    const key = (error.params as { additionalProperties: string[] }).additionalProperties[0];
    return { field: fieldName(value, [...path, key]), reason: unknownKey(node), shape: true };
  }
  if (error.keyword === 'required') {
    const key = (error.params as { requiredProperties: string[] }).requiredProperties[0];
    const property = (node.properties as Record<string, SchemaNode>)[key];
    return { field: fieldName(value, [...path, key]), reason: `${expectation(property)}, got nothing`, shape: true };
  }
  if (error.schemaPath.endsWith('/propertyNames')) {
    // the key itself is at fault: the field names it, the reason need not repeat it
    return { field: fieldName(value, path), reason: expectation(node), shape: false };
  }
  const shape = error.keyword === 'type' || (error.keyword === 'anyOf' && errors.filter(encloses).every((e) => e === error || e.keyword === 'type'));
  return { field: fieldName(value, path), reason: `${expectation(node)}, got ${shown(valueAt(value, path))}`, shape };
}

type SchemaError = ReturnType<Validator['Errors']>[number];

/** A union reports its branches' failures before its own: the union is what the value broke. */
function enclosing(first: SchemaError): (e: SchemaError) => boolean {
  return (e) => e.instancePath === first.instancePath && (e.schemaPath === first.schemaPath || first.schemaPath.startsWith(`${e.schemaPath}/`));
}

/** The branch of a union of objects whose "type" constant is the value's "type", or -1. */
function taggedBranch(union: SchemaNode, value: unknown): number {
  if (typeof value !== 'object' || value === null || !Array.isArray(union.anyOf)) return -1;
  const tag = (value as Record<string, unknown>).type;
  const tags = (union.anyOf as SchemaNode[]).map((b) => ((b.properties as Record<string, SchemaNode> | undefined)?.type as SchemaNode | undefined)?.const);
  const k = tags.indexOf(tag);
  return tag !== undefined && k >= 0 && tags.lastIndexOf(tag) === k ? k : -1;
}

/** What a schema node asks for, as "must be ...". */
function expectation(node: SchemaNode): string {
  return typeof node.errorMessage === 'string' ? node.errorMessage : `must be ${noun(node)}`;
}

function noun(node: SchemaNode): string {
  if (Array.isArray(node.enum)) return alternatives(node.enum.map((v) => JSON.stringify(v)));
  if ('const' in node) return JSON.stringify(node.const);
  if (Array.isArray(node.anyOf)) return alternatives((node.anyOf as SchemaNode[]).map(noun));
  const { minimum: min, maximum: max, minItems, maxItems } = node;
  switch (node.type) {
    case 'integer':
    case 'number': {
      const kind = node.type === 'integer' ? 'an integer' : 'a number';
      if (typeof min === 'number' && typeof max === 'number') return `${kind} from ${min} to ${max}`;
      if (typeof min === 'number') return `${kind} of at least ${min}`;
      if (typeof max === 'number') return `${kind} of at most ${max}`;
      return kind;
    }
    case 'boolean':
      return 'true or false';
    case 'string':
      if (typeof node.pattern === 'string') return `a string matching /${node.pattern}/`;
      return typeof node.minLength === 'number' && node.minLength > 0 ? 'a non-empty string' : 'a string';
    case 'array':
      if (typeof minItems === 'number' && typeof maxItems === 'number') return `an array of ${minItems} to ${maxItems} entries`;
      return typeof minItems === 'number' && minItems > 0 ? 'a non-empty array' : 'an array';
    case 'object':
      return 'an object';
    default:
      return JSON.stringify(node.type ?? 'valid');
  }
}

function alternatives(words: string[]): string {
  return words.length < 2 ? words.join('') : `${words.slice(0, -1).join(', ')} or ${words[words.length - 1]}`;
}

function unknownKey(object: SchemaNode): string {
  const known = Object.keys((object.properties as object | undefined) ?? {});
  return known.length === 0 ? 'unknown key' : `unknown key (known: ${known.join(', ')})`;
}

/** The value as a reason shows it: scalars as JSON, containers by their kind. */
function shown(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (Array.isArray(value)) return value.length === 0 ? 'an empty array' : `an array of ${value.length} entries`;
  if (typeof value === 'object' && value !== null) return 'an object';
  return JSON.stringify(value);
}

/** The keys of a JSON Pointer (RFC 6901: "~1" is "/", "~0" is "~"). */
function pointerKeys(pointer: string): string[] {
  return pointer === '' ? [] : pointer.slice(1).split('/').map((k) => k.replaceAll('~1', '/').replaceAll('~0', '~'));
}

/** "ports[1].rxqAffinity.0": an index in brackets where the value there is an array. */
function fieldName(value: unknown, keys: string[]): string {
  let field = '';
  let at = value;
  for (const key of keys) {
    field = Array.isArray(at) ? `${field}[${key}]` : field === '' ? key : `${field}.${key}`;
    at = child(at, key);
  }
  return field;
}

function valueAt(value: unknown, keys: string[]): unknown {
  return keys.reduce(child, value);
}

function child(value: unknown, key: string): unknown {
  return typeof value === 'object' && value !== null ? (value as Record<string, unknown>)[key] : undefined;
}

/**
 * The schema node an error's schemaPath ("#/properties/ports/items/properties/mtu") points
 * at. The keys of patternProperties are regular expressions, written into the path as they
 * are, '/' and all: each is matched whole.
 */
function schemaAt(root: SchemaNode, schemaPath: string): SchemaNode {
  let node = root;
  let rest = schemaPath.replace(/^#\/?/, '');
  while (rest !== '') {
    const slash = rest.indexOf('/');
    const keyword = slash < 0 ? rest : rest.slice(0, slash);
    rest = slash < 0 ? '' : rest.slice(slash + 1);
    if (keyword === 'patternProperties') {
      const patterns = node.patternProperties as Record<string, SchemaNode>;
      const pattern = Object.keys(patterns).find((p) => rest === p || rest.startsWith(`${p}/`)) ?? '';
      node = patterns[pattern];
      rest = rest.slice(pattern.length + 1);
      continue;
    }
    node = node[keyword.replaceAll('~1', '/').replaceAll('~0', '~')] as SchemaNode;
  }
  return node;
}
