#!/usr/bin/env node
// Installed entry point: runs the TypeScript CLI through tsx, as `npm run cli` does in the repository.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
