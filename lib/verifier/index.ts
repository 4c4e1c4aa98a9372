export { Verifier, NONCE_TTL_MS, MAX_CLOCK_SKEW_S } from './verifier';
export type { VerifierOptions, AttestationResult, PublicDevice } from './verifier';
export { createRequestListener, MAX_BODY_BYTES } from './http';
export { startVerifierServer, openStore } from './server';
export type { RunningVerifier, ServerOptions } from './server';
export { SqliteStore } from './store/sqlite';
export type { VerifierStore } from './store/types';
export { DEFAULT_WORKFLOW, runWorkflow, workflowSchema } from './workflow';
export type * from './types';
