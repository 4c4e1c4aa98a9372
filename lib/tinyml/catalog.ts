/**
 * The shipped models, named without loading them. The family
 * has one network per time source: a sensor's own timestamps carry its crystal's signature,
 * arrival times bury it under network jitter, and one network serving both resolves neither well.
 */
import * as path from 'node:path';

export const MODELS_DIR = path.resolve(__dirname, '..', '..', '..', 'models');
export const MODEL_FAMILY = 'sensor-behaviour-v2';

/** Where a source's times come from: its own stamps, or when its readings arrived. */
export type TimeSource = 'source' | 'arrival';

export const MODEL_VARIANTS: Record<TimeSource, string> = { source: 'stamped', arrival: 'arrival' };

/** The shipped model for sources whose time comes from `timeSource`. */
export function shippedModelDir(timeSource: TimeSource): string {
  return path.join(MODELS_DIR, MODEL_FAMILY, MODEL_VARIANTS[timeSource]);
}
