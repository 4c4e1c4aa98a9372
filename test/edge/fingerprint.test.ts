import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { collectComponents, digestComponent, digestComponents, matchRatio } from '../../lib/edge/fingerprint';

function fixtureTree(files: Record<string, string>): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-fp-'));
  for (const [name, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
    fs.writeFileSync(path.join(root, name), content);
  }
  return root;
}

const nic = (mac: string, internal = false): os.NetworkInterfaceInfo => ({
  address: '10.0.0.2',
  netmask: '255.0.0.0',
  family: 'IPv4',
  mac,
  internal,
  cidr: null,
});

describe('lib/edge/fingerprint', () => {
  let root: string;
  afterEach(() => root && fs.rmSync(root, { recursive: true, force: true }));

  it('reads machine-id, CPU serial and model, disk serials and DMI UUID from the host tree', () => {
    root = fixtureTree({
      'etc/machine-id': '4c4c4544004a3510\n',
      'proc/cpuinfo':
        'processor\t: 0\nmodel name\t: ARMv7 Processor rev 3 (v7l)\nHardware\t: BCM2835\nSerial\t\t: 10000000abcdef01\n',
      'sys/block/mmcblk0/device/cid': '035344534331364780a1b2c3d4013b00\n',
      'sys/block/sda/device/serial': 'WD-WX123\n',
      'sys/block/loop0/device/serial': 'ignored\n',
      'sys/class/dmi/id/product_uuid': 'ABCD-1234\n',
    });
    const components = collectComponents({ root, networkInterfaces: {} });
    assert.deepEqual(components, {
      'machine-id': '4c4c4544004a3510',
      'cpu.serial': '10000000abcdef01',
      'cpu.model': 'ARMv7 Processor rev 3 (v7l)',
      'disk.mmcblk0': '035344534331364780a1b2c3d4013b00',
      'disk.sda': 'WD-WX123',
      'dmi.product_uuid': 'abcd-1234',
    });
  });

  it('takes one component per physical network interface and skips loopback and zero MACs', () => {
    const components = collectComponents({
      sources: ['mac'],
      networkInterfaces: {
        lo: [nic('00:00:00:00:00:00', true)],
        eth0: [nic('B8:27:EB:01:02:03')],
        wlan0: [nic('00:00:00:00:00:00')],
      },
    });
    assert.deepEqual(components, { 'mac.eth0': 'b8:27:eb:01:02:03' });
  });

  it('skips sources it cannot read instead of failing', () => {
    root = fixtureTree({});
    assert.deepEqual(collectComponents({ root, networkInterfaces: {} }), {});
  });

  it('lets configured extra components override read ones', () => {
    root = fixtureTree({ 'etc/machine-id': 'abc' });
    assert.deepEqual(
      collectComponents({ root, sources: ['machine-id'], extra: { 'machine-id': 'xyz', 'plc.serial': 'S7-1500-42' } }),
      { 'machine-id': 'xyz', 'plc.serial': 'S7-1500-42' },
    );
  });

  it('digests each component as sha256(salt || 0x00 || name || 0x00 || value)', () => {
    const salt = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    const expected = crypto
      .createHash('sha256')
      .update(Buffer.concat([salt, Buffer.from([0]), Buffer.from('machine-id'), Buffer.from([0]), Buffer.from('abc')]))
      .digest('hex');
    assert.equal(digestComponent(salt, 'machine-id', 'abc'), expected);
    assert.deepEqual(digestComponents(salt, { 'machine-id': 'abc' }), {
      salt: salt.toString('hex'),
      components: { 'machine-id': expected },
    });
  });

  it('sends no raw value: digests differ per salt and do not contain the value', () => {
    const raw = { 'cpu.serial': '10000000abcdef01' };
    const a = digestComponents(crypto.randomBytes(16), raw);
    const b = digestComponents(crypto.randomBytes(16), raw);
    assert.notEqual(a.components['cpu.serial'], b.components['cpu.serial']);
    assert.ok(!JSON.stringify(a).includes('10000000abcdef01'));
  });

  it('counts k-of-n matches so a replaced NIC costs one component, not the identity', () => {
    const salt = crypto.randomBytes(16);
    const registered = digestComponents(salt, {
      'machine-id': 'm',
      'mac.eth0': 'aa',
      'cpu.serial': 'c',
      'disk.sda': 'd',
    }).components;
    const afterNicSwap = digestComponents(salt, {
      'machine-id': 'm',
      'mac.eth0': 'bb',
      'cpu.serial': 'c',
      'disk.sda': 'd',
    }).components;
    assert.equal(matchRatio(registered, afterNicSwap), 0.75);
    assert.equal(matchRatio(registered, {}), 0);
    assert.equal(matchRatio({}, afterNicSwap), 0);
  });
});
