/**
 * The hardware fingerprint: a set of named components (machine-id, MACs, CPU, disks, DMI UUID,
 * TPM) read from the host, each sent only as a salted SHA-256 digest so the verifier can count
 * k-of-n matches without ever seeing a serial number. A source that cannot be read is skipped.
 *
 * digest = hex(sha256(salt || 0x00 || name || 0x00 || value))   (DESIGN.md §3)
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const FINGERPRINT_SOURCES = ['machine-id', 'mac', 'cpu', 'disk', 'dmi', 'tpm'] as const;
export type FingerprintSource = (typeof FINGERPRINT_SOURCES)[number];

export interface Fingerprint {
  /** hex */
  salt: string;
  components: Record<string, string>;
}

export interface CollectOptions {
  sources?: readonly FingerprintSource[];
  /** Root of the file system to read /etc, /proc and /sys from (tests point it at a fixture tree). */
  root?: string;
  /** Network interfaces; defaults to os.networkInterfaces(). */
  networkInterfaces?: NodeJS.Dict<os.NetworkInterfaceInfo[]>;
  /** Extra components configured by the user, e.g. a PLC serial number. They win over read ones. */
  extra?: Record<string, string>;
}

function readTrimmed(file: string): string | undefined {
  try {
    const value = fs.readFileSync(file, 'utf8').replace(/\0/g, '').trim();
    return value || undefined;
  } catch {
    return undefined;
  }
}

function component(name: string, value: string | undefined): Record<string, string> {
  return value ? { [name]: value } : {};
}

function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir).sort();
  } catch {
    return [];
  }
}

type Reader = (options: Required<Pick<CollectOptions, 'root'>> & CollectOptions) => Record<string, string>;

const readers: Record<FingerprintSource, Reader> = {
  'machine-id': ({ root }) => {
    return component(
      'machine-id',
      readTrimmed(path.join(root, 'etc/machine-id')) ?? readTrimmed(path.join(root, 'var/lib/dbus/machine-id')),
    );
  },
  // One component per interface, so a replaced NIC costs one match, not the whole identity.
  mac: ({ networkInterfaces = os.networkInterfaces() }) => {
    const found: Record<string, string> = {};
    for (const [name, addresses] of Object.entries(networkInterfaces)) {
      const physical = addresses?.find(a => !a.internal && a.mac && a.mac !== '00:00:00:00:00:00');
      if (physical) found[`mac.${name}`] = physical.mac.toLowerCase();
    }
    return found;
  },
  cpu: ({ root }) => {
    const cpuinfo = readTrimmed(path.join(root, 'proc/cpuinfo')) ?? '';
    const field = (name: string) => cpuinfo.match(new RegExp(`^${name}\\s*:\\s*(.+)$`, 'mi'))?.[1].trim();
    const found: Record<string, string> = {};
    const serial = field('Serial');
    const model = field('model name') ?? field('Model') ?? field('Hardware');
    if (serial && !/^0+$/.test(serial)) found['cpu.serial'] = serial;
    if (model) found['cpu.model'] = model;
    return found;
  },
  disk: ({ root }) => {
    const found: Record<string, string> = {};
    const blockDir = path.join(root, 'sys/block');
    for (const name of listDir(blockDir)) {
      if (/^(loop|ram|zram|dm-|sr)/.test(name)) continue;
      const serial =
        readTrimmed(path.join(blockDir, name, 'device/serial')) ??
        readTrimmed(path.join(blockDir, name, 'device/wwid')) ??
        readTrimmed(path.join(blockDir, name, 'device/cid')); // SD/eMMC cards on ARM gateways
      if (serial) found[`disk.${name}`] = serial;
    }
    return found;
  },
  dmi: ({ root }) => {
    return component('dmi.product_uuid', readTrimmed(path.join(root, 'sys/class/dmi/id/product_uuid'))?.toLowerCase());
  },
  // The EK certificate is not exposed by sysfs; a digest of the TPM's identifying attributes is
  // what is readable without tpm2-tools.
  tpm: ({ root }) => {
    const dir = path.join(root, 'sys/class/tpm/tpm0');
    const ek = readTrimmed(path.join(dir, 'device/endorsement_key')) ?? readTrimmed(path.join(dir, 'ek_cert'));
    return component('tpm.ek', ek && crypto.createHash('sha256').update(ek).digest('hex'));
  },
};

/** Raw component values. They stay on the device: only `digestComponents` output leaves it. */
export function collectComponents(options: CollectOptions = {}): Record<string, string> {
  const { sources = FINGERPRINT_SOURCES, root = '/', extra = {} } = options;
  const components: Record<string, string> = {};
  for (const source of sources) Object.assign(components, readers[source]({ ...options, root }));
  for (const [name, value] of Object.entries(extra)) if (value) components[name] = value;
  return components;
}

export function digestComponent(salt: Uint8Array, name: string, value: string): string {
  return crypto
    .createHash('sha256')
    .update(salt)
    .update(Buffer.of(0))
    .update(name, 'utf8')
    .update(Buffer.of(0))
    .update(value, 'utf8')
    .digest('hex');
}

export function digestComponents(salt: Uint8Array, raw: Record<string, string>): Fingerprint {
  const components: Record<string, string> = {};
  for (const name of Object.keys(raw).sort()) components[name] = digestComponent(salt, name, raw[name]);
  return { salt: Buffer.from(salt).toString('hex'), components };
}

/** Share of the registered components that the presented digests match (0 when none registered). */
export function matchRatio(registered: Record<string, string>, presented: Record<string, string>): number {
  const names = Object.keys(registered);
  if (names.length === 0) return 0;
  const matching = names.filter(
    name =>
      presented[name] !== undefined &&
      presented[name].length === registered[name].length &&
      crypto.timingSafeEqual(Buffer.from(presented[name]), Buffer.from(registered[name])),
  ).length;
  return matching / names.length;
}
