/**
 * Picks TensorFlow.js's backend once per process: tfjs-node when the user installed it (native,
 * an optional peer), else WASM, whose .wasm files ship inside the npm package, so it works
 * offline and on ARM with no native build. M2M_TFJS_BACKEND=cpu|wasm|tensorflow overrides, for
 * benchmarks and tests. Only tfjs-core and the backends are loaded, never the layers library.
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';

export type BackendName = 'tensorflow' | 'wasm' | 'cpu';

let chosen: Promise<BackendName> | undefined;

function installed(module: string): boolean {
  try {
    require.resolve(module);
    return true;
  } catch {
    return false;
  }
}

async function choose(wanted: BackendName | undefined): Promise<BackendName> {
  if ((wanted === undefined || wanted === 'tensorflow') && installed('@tensorflow/tfjs-node')) {
    require('@tensorflow/tfjs-node');
    if (await tf.setBackend('tensorflow')) return 'tensorflow';
  }
  if (wanted !== 'cpu') {
    // The .wasm files sit beside the backend's bundle; naming the folder keeps a bundler or an
    // odd working directory from sending it to look elsewhere.
    setWasmPaths(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm')) + path.sep);
    if (await tf.setBackend('wasm').catch(() => false)) return 'wasm';
  }
  // The plain-JS backend comes with the WASM one; it registers itself when loaded.
  require('@tensorflow/tfjs-backend-cpu');
  await tf.setBackend('cpu');
  return 'cpu';
}

/** Resolves to the backend in use; later calls share the first call's choice. */
export function useBackend(wanted = process.env.M2M_TFJS_BACKEND as BackendName | undefined): Promise<BackendName> {
  chosen ??= choose(wanted).then(async name => {
    await tf.ready();
    return name;
  });
  return chosen;
}

/** Switches backend for side-by-side benchmarks; nodes use useBackend(). */
export async function switchBackend(name: BackendName): Promise<BackendName> {
  chosen = choose(name).then(async got => {
    await tf.ready();
    return got;
  });
  return chosen;
}
