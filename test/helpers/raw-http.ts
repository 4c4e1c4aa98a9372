import * as net from 'node:net';

/** One raw HTTP/1.1 exchange: what curl --path-as-is or a broken client would send. */
export function rawRequest(
  url: string,
  text: string,
  waitMs = 2000,
): Promise<{ status: number; headers: string; body: string; closed: boolean }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () => socket.write(text));
    let data = '';
    const timer = setTimeout(() => {
      socket.destroy();
      finish(false);
    }, waitMs);
    const finish = (closed: boolean) => {
      clearTimeout(timer);
      const [head, ...rest] = data.split('\r\n\r\n');
      resolve({ status: Number(head.split(' ')[1]), headers: head, body: rest.join('\r\n\r\n'), closed });
    };
    socket.on('data', chunk => {
      data += chunk;
    });
    socket.on('close', () => finish(true));
    socket.on('error', err => (data ? undefined : reject(err)));
  });
}
