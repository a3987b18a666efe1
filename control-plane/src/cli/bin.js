#!/usr/bin/env node
// The `tenantry` command (package.json "bin"): runs the TypeScript CLI through tsx, as `npm start`
// runs the server, so a clone needs no build step (`npx tenantry …`, or `npm link` for a global one).
import { register } from 'tsx/esm/api';

register();
await import('./main.ts');
