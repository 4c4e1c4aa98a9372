import * as assert from 'node:assert/strict';
import { orderedNonce, uuidv7 } from '../../lib/verifier/ids';

describe('verifier: time-ordered ids', () => {
  it('makes RFC 9562 version 7 UUIDs that sort by time and never repeat', () => {
    const ids = Array.from({ length: 5000 }, (_, i) => uuidv7(1_800_000_000_000 + i));
    for (const id of ids) assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.deepEqual([...ids].sort(), ids, 'ordered by their millisecond');
    assert.equal(new Set(ids).size, ids.length);
    assert.equal(Number.parseInt(ids[0].replace(/-/g, '').slice(0, 12), 16), 1_800_000_000_000);
  });

  it('makes 32-byte nonces whose random part differs every time, across pool refills', () => {
    const nonces = Array.from({ length: 1000 }, () => orderedNonce(1_800_000_000_000));
    const random = nonces.map(n => Buffer.from(n, 'base64url').subarray(6).toString('hex'));
    assert.ok(nonces.every(n => Buffer.from(n, 'base64url').length === 32));
    assert.equal(new Set(random).size, 1000);
    // No byte of the pool handed out twice: consecutive nonces share no 26-byte random tail.
    assert.ok(random.every((r, i) => i === 0 || r !== random[i - 1]));
  });
});
