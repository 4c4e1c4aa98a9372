/**
 * This Node-RED's own webhook secret: what an m2m-verifier signs with and an m2m-webhook-in
 * checks with when neither is given one, so a verifier and a receiver in one Node-RED work
 * together with nothing to paste. A `whsec_` secret in a 0600 file under the user dir, made on
 * first use, never shown in the editor.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { NodeAPI } from 'node-red';
import { generateSecret } from '../../lib/webhooks/standard';
import { dataDir } from './node-kit';

export function localWebhookSecret(RED: NodeAPI): string {
  const file = path.join(dataDir(RED), 'webhook.secret');
  try {
    fs.writeFileSync(file, `${generateSecret()}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return fs.readFileSync(file, 'utf8').trim();
}
