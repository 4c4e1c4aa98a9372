/**
 * TensorFlow.js for training and evaluation (never at run time: lib/tinyml/model runs the network
 * itself): tfjs-node when it is installed (native, fast), else the plain-JS backend of the full
 * @tensorflow/tfjs, a development dependency. M2M_TFJS_BACKEND=cpu forces the latter.
 */
import * as tf from '@tensorflow/tfjs';

export type BackendName = 'tensorflow' | 'cpu';

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
  if (wanted !== 'cpu' && installed('@tensorflow/tfjs-node')) {
    require('@tensorflow/tfjs-node');
    if (await tf.setBackend('tensorflow')) return 'tensorflow';
  }
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
