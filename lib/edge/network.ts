/**
 * What identifies the gateway's place on the network: its interfaces' addresses and MACs and
 * its default gateway. A change (moved to another segment, a new NIC, a new DHCP lease) is a
 * reason to re-attest at once.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';

/** The default gateway from /proc/net/route (Linux), as a dotted quad; undefined elsewhere. */
export function defaultGateway(routeFile = '/proc/net/route'): string | undefined {
  let text: string;
  try {
    text = fs.readFileSync(routeFile, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n').slice(1)) {
    const [, destination, gateway] = line.trim().split(/\s+/);
    if (destination === '00000000' && gateway && /^[0-9A-F]{8}$/i.test(gateway)) {
      // Little-endian hex: 0101A8C0 is 192.168.1.1.
      return [6, 4, 2, 0].map(at => Number.parseInt(gateway.slice(at, at + 2), 16)).join('.');
    }
  }
  return undefined;
}

/** One string that changes whenever the addresses, MACs or default gateway change. */
export function networkSignature(
  interfaces: NodeJS.Dict<os.NetworkInterfaceInfo[]> = os.networkInterfaces(),
  gateway: string | undefined = defaultGateway(),
): string {
  const parts: string[] = [];
  for (const [name, addresses] of Object.entries(interfaces)) {
    for (const address of addresses ?? [])
      if (!address.internal) parts.push(`${name}|${address.mac}|${address.address}`);
  }
  return `${parts.sort().join(',')};gw=${gateway ?? ''}`;
}
