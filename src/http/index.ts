export { createHttpApp, type HttpAppDeps } from './app.js';
export { startHttpServer, ListenError, type RunningHttpServer } from './server.js';
export type { AccessTokens, Access } from './auth.js';
