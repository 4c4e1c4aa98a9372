/**
 * A load client in its own process, so the server it measures keeps a core to itself:
 *   node post-load.js <base url> <requests.json> <in flight>
 * posts each prepared request once (keep-alive) and prints {seconds, statuses} as JSON.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';

interface Prepared {
  path: string;
  headers: Record<string, string>;
  body: string;
}

async function main(): Promise<void> {
  const [base, file, inFlightText] = process.argv.slice(2);
  const requests = JSON.parse(fs.readFileSync(file, 'utf8')) as Prepared[];
  const agent = new http.Agent({ keepAlive: true, maxSockets: Number(inFlightText) });
  const statuses: Record<number, number> = {};
  const send = (request: Prepared) =>
    new Promise<void>((resolve, reject) => {
      const req = http.request(
        base + request.path,
        { method: 'POST', agent, headers: { ...request.headers, 'content-length': Buffer.byteLength(request.body) } },
        res => {
          res.resume();
          res.on('end', () => {
            statuses[res.statusCode ?? 0] = (statuses[res.statusCode ?? 0] ?? 0) + 1;
            resolve();
          });
        },
      );
      req.on('error', reject);
      req.end(request.body);
    });
  let next = 0;
  const start = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: Number(inFlightText) }, async () => {
      while (next < requests.length) await send(requests[next++]);
    }),
  );
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  process.stdout.write(`${JSON.stringify({ seconds, statuses })}\n`);
  agent.destroy();
}

main().catch(err => {
  console.error(err);
  process.exit(1);
});
