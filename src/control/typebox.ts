// TypeBox, through one module. The package is some 700 small ES modules, which Node takes
// about 350 ms to resolve and load, at every start of the daemon; the build (package.json,
// "build") bundles this file with esbuild into one, which loads in about 40.
export { default as Type } from 'typebox';
export type { Static, TOptional, TSchema, TUnknown } from 'typebox';
export { Compile, type Validator } from 'typebox/compile';
