/**
 * The editor as a user meets it, in headless Chromium: the palette, every edit dialog and help
 * panel, and every example imported through Import > Examples, deployed and watched.
 * Screenshots land in screenshots/ (ignored by git); `npm run screenshots` copies them to docs/
 * for the README, on purpose, so a test run leaves the checkout clean.
 */
import * as assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { PACKAGE_NAME, packageRoot, prepareUserDir, startNodeRed } from '../../tools/node-red-home';
import { editorReady } from '../helpers/editor';
import { freePort } from '../helpers/ports';

const CHROMIUM = process.env.M2M_CHROMIUM || '/usr/bin/chromium';
const docs = path.join(packageRoot, 'screenshots');
const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8'));
const types = Object.keys(pkg['node-red'].nodes) as string[];
const examples = fs
  .readdirSync(path.join(packageRoot, 'examples'), { recursive: true, encoding: 'utf8' })
  .filter(file => file.endsWith('.json'))
  .sort();

declare const RED: any;
declare const $: any;

/** Plausible values at their longest for the placeholders of our statuses. */
const STATUS_SAMPLES: Record<string, string> = {
  code: 'verifier_unreachable',
  reason: 'fingerprint_mismatch',
  deviceId: 'press-7-gateway',
  source: 'plant/press-7/pressure',
  other: 'plant/press-8/pressure',
  path: '/m2m-events',
  extra: ' (120 held, 35 to output 2)',
  status: 'In Review',
  message: 'connect ECONNREFUSED',
};

/**
 * The longest status each of our node types can show, from its English catalog with plausible
 * values (counts of four digits, times of day): what a layout must leave room for. Entries only
 * ever logged (provision's retry warning) are left out.
 */
function longestStatuses(): Record<string, string> {
  const longest: Record<string, string> = {};
  for (const type of fs.readdirSync(path.join(packageRoot, 'nodes')).filter(name => name.startsWith('m2m-'))) {
    const file = path.join(packageRoot, 'nodes', type, 'locales', 'en-US', `${type}.json`);
    const statuses = (JSON.parse(fs.readFileSync(file, 'utf8'))[type]?.status ?? {}) as Record<string, string>;
    for (const [key, status] of Object.entries(statuses)) {
      if (key === 'retrying') continue;
      const text = status.replace(
        /__(\w+)__/g,
        (_, name: string) => STATUS_SAMPLES[name] ?? (/until|retry|next|expires/.test(name) ? '14:05:09' : '1234'),
      );
      if (text.length > (longest[type]?.length ?? 0)) longest[type] = text;
    }
  }
  return longest;
}

/**
 * Status labels that meet another node or label, and nodes cut off at the canvas's left edge, on
 * flow `z`, with every node of ours showing its longest status.
 */
async function layoutProblems(page: Page, z: string): Promise<string[]> {
  await page.evaluate(
    ([flow, longest]) => {
      RED.workspaces.show(flow);
      RED.nodes.eachNode((n: any) => {
        if (n.z !== flow || !longest[n.type]) return;
        n.status = { fill: 'green', shape: 'dot', text: longest[n.type] };
        n.dirtyStatus = true;
        n.dirty = true;
      });
      RED.view.redraw(true);
    },
    [z, longestStatuses()] as const,
  );
  // The view draws on the next frames.
  await page.waitForTimeout(500);
  return page.evaluate(flow => {
    type Box = { name: string; rect: DOMRect };
    const bodies: Box[] = [];
    const labels: Box[] = [];
    const chart = document.getElementById('red-ui-workspace-chart')!.getBoundingClientRect();
    const scroll = document.getElementById('red-ui-workspace-chart')!.scrollLeft;
    RED.nodes.eachNode((n: any) => {
      if (n.z !== flow) return;
      const group = document.getElementById(n.id);
      const body = group?.querySelector('.red-ui-flow-node');
      const label = group?.querySelector('.red-ui-flow-node-status-label');
      const name = n.name || n.type;
      if (body) bodies.push({ name, rect: body.getBoundingClientRect() });
      if (label?.textContent) labels.push({ name, rect: label.getBoundingClientRect() });
    });
    const meet = (a: DOMRect, b: DOMRect) =>
      a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
    const found: string[] = [];
    for (const label of labels)
      for (const other of [...bodies, ...labels])
        if (other.name !== label.name && meet(label.rect, other.rect))
          found.push(`${label.name}'s status over ${other.name}`);
    for (const body of bodies)
      if (body.rect.left + scroll < chart.left) found.push(`${body.name} starts left of the canvas`);
    if (!labels.length) found.push('no status label was shown');
    return found;
  }, z);
}

describe('the editor in headless Chromium', function () {
  this.timeout(120_000);
  let userDir: string;
  let nodeRed: ChildProcess;
  let browser: Browser;
  let page: Page;
  let url: string;
  const pageErrors: string[] = [];

  before(async () => {
    assert.ok(
      fs.existsSync(CHROMIUM),
      `${CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)`,
    );
    userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-editor-'));
    prepareUserDir(userDir);
    const port = await freePort();
    url = `http://127.0.0.1:${port}/`;
    nodeRed = startNodeRed(userDir, port, 'pipe');
    let log = '';
    await new Promise<void>((resolve, reject) => {
      nodeRed.stdout!.on('data', chunk => {
        log += chunk;
        if (log.includes('Server now running')) resolve();
      });
      nodeRed.on('exit', code => reject(new Error(`Node-RED exited with ${code}: ${log}`)));
    });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--no-first-run',
        '--disable-quic',
        '--disable-sync',
      ],
    });
    page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    page.on('pageerror', err => pageErrors.push(err.message));
    await page.goto(url);
    await editorReady(page);
    fs.mkdirSync(docs, { recursive: true });
  });

  after(async () => {
    await browser?.close();
    if (nodeRed && nodeRed.exitCode === null) {
      const exited = new Promise(resolve => nodeRed.once('exit', resolve));
      nodeRed.kill('SIGTERM');
      await exited;
    }
    if (userDir) fs.rmSync(userDir, { recursive: true, force: true });
  });

  const categoryOf = (type: string): Promise<string> => page.evaluate(t => RED.nodes.getType(t).category, type);

  it('shows every node of ours in the "m2m identity" palette category, with its icon', async () => {
    let shown = 0;
    for (const type of types) {
      if ((await categoryOf(type)) === 'config') continue;
      const entry = page.locator(`#red-ui-palette-base-category-m2m_identity [data-palette-type="${type}"]`);
      await entry.waitFor({ state: 'visible' });
      const image = await entry.locator('.red-ui-palette-icon').evaluate(el => getComputedStyle(el).backgroundImage);
      const iconUrl = image.match(/url\("?(.*?)"?\)/)?.[1];
      assert.ok(iconUrl, `${type} has no icon`);
      // Node-RED falls back to its own arrow when it did not find the icon beside the node file.
      assert.ok(iconUrl!.includes(`icons/${PACKAGE_NAME}/`), `${type} shows ${iconUrl}, not its own icon`);
      const icon = await page.request.get(iconUrl!);
      assert.equal(icon.status(), 200, `${type} icon ${iconUrl}`);
      assert.match(await icon.text(), /<svg/, `${type} icon is not our SVG`);
      shown++;
    }
    assert.ok(shown >= 3, `only ${shown} of our nodes in the palette`);
    await page
      .locator('#red-ui-palette-base-category-m2m_identity')
      .screenshot({ path: path.join(docs, 'palette.png') });
  });

  interface Definition {
    category: string;
    defaults: Record<string, { type?: string }>;
    credentials: Record<string, string>;
  }
  const definitionOf = (type: string): Promise<Definition> =>
    page.evaluate(t => {
      const def = RED.nodes.getType(t);
      return {
        category: def.category,
        defaults: Object.fromEntries(
          Object.entries(def.defaults).map(([k, v]: [string, any]) => [k, { type: v.type }]),
        ),
        credentials: Object.fromEntries(
          Object.entries(def.credentials || {}).map(([k, v]: [string, any]) => [k, v.type]),
        ),
      };
    }, type);
  const trayCount = () => page.evaluate(() => $('.red-ui-tray').length);

  /** Opens the dialog of `type` as a user would: a config node through the pencil-and-plus button of a node that uses it. */
  async function openDialog(type: string): Promise<void> {
    const definition = await definitionOf(type);
    if (definition.category !== 'config') {
      await page.evaluate(t => {
        const id = RED.nodes.id();
        RED.view.importNodes([{ id, type: t, x: 200, y: 100, z: RED.workspaces.active() }]);
        RED.editor.edit(RED.nodes.node(id));
      }, type);
      await page.waitForFunction(() => $('.red-ui-tray').length === 1);
      // The tray is there before its form: on a busy machine the template lands a moment later.
      const ownField = Object.keys(definition.defaults)[0];
      await page.locator(`[id="node-input-${ownField}"]`).waitFor({ state: 'attached' });
      return;
    }
    for (const parent of types) {
      const parentDefinition = await definitionOf(parent);
      const prop = Object.keys(parentDefinition.defaults).find(key => parentDefinition.defaults[key].type === type);
      if (!prop) continue;
      await openDialog(parent);
      const prefix = parentDefinition.category === 'config' ? 'node-config-input' : 'node-input';
      // The tray keeps sliding under headless Chromium, so Playwright never finds the button "stable":
      // trigger the button's own click handler instead.
      await page.locator(`#${prefix}-btn-${prop}-add`).waitFor({ state: 'visible' });
      await page.evaluate(id => $(`#${id}`).trigger('click'), `${prefix}-btn-${prop}-add`);
      // The editor stacks the config dialog in place of its parent's, in the same tray element.
      const ownField = Object.keys(definition.defaults).find(key => key !== 'name');
      await page.locator(`[id="node-config-input-${ownField}"]`).last().waitFor({ state: 'attached' });
      return;
    }
    throw new Error(`no node of ours uses the config node ${type}`);
  }

  async function closeDialogs(): Promise<void> {
    for (let i = 0; i < 5 && (await trayCount()) > 0; i++) {
      await page.evaluate(() => $('button[id$="dialog-cancel"]:visible').last().trigger('click'));
      await page.waitForTimeout(500);
    }
    assert.equal(await trayCount(), 0, 'an edit dialog did not close');
  }

  it('opens every edit dialog with its fields, secrets as password inputs', async () => {
    for (const type of types) {
      const definition = await definitionOf(type);
      await openDialog(type);
      const prefix = definition.category === 'config' ? 'node-config-input' : 'node-input';
      // A stacked config dialog sits after its parent's in the DOM, and field ids repeat across them.
      const field = (name: string) => page.locator(`[id="${prefix}-${name}"]`).last();
      for (const name of Object.keys(definition.defaults)) {
        assert.equal(await field(name).count(), 1, `${type}: no field ${name}`);
      }
      for (const [name, kind] of Object.entries(definition.credentials)) {
        const input = field(name);
        assert.equal(await input.count(), 1, `${type}: no credential field ${name}`);
        if (kind === 'password')
          assert.equal(await input.getAttribute('type'), 'password', `${type}.${name} is not a password input`);
      }
      if (type === 'm2m-attest') await page.screenshot({ path: path.join(docs, 'dialog.png') });
      await closeDialogs();
    }
    // Start the next tests from a freshly loaded editor, without the nodes these dialogs were opened on.
    page.once('dialog', dialog => dialog.accept()); // "leave the page with undeployed changes?"
    await page.reload();
    await editorReady(page);
  });

  describe('each example, imported as a user does', () => {
    // Examples that use this Node-RED's identity API run beside the quick start's verifier, as
    // their info text says; those that host a verifier themselves run alone.
    const hostedVerifier = JSON.parse(
      fs.readFileSync(path.join(packageRoot, 'examples', 'quick-start.json'), 'utf8'),
    ).filter((n: { type: string }) => n.type === 'tab' || n.type === 'm2m-verifier');
    const deploy = async (flow: unknown[]) => {
      const answer = await page.request.post(`${url}flows`, {
        data: flow,
        headers: { 'Node-RED-Deployment-Type': 'full' },
      });
      assert.equal(answer.status(), 204);
    };
    const freshEditor = async () => {
      page.once('dialog', dialog => dialog.accept()); // "leave the page with undeployed changes?"
      await page.reload();
      await editorReady(page);
      await page.evaluate(() => RED.debug.clearMessageList?.(true));
    };
    // Leave no trace for the next example, whether this one passed or not.
    afterEach(async () => {
      await deploy([]);
      await freshEditor();
    });

    for (const example of examples) {
      it(`imports ${example} through Menu > Import > Examples, deploys it, and shows no error`, async () => {
        const [folder, file] = [path.dirname(example), path.basename(example, '.json')];
        const hostsVerifier = JSON.parse(fs.readFileSync(path.join(packageRoot, 'examples', example), 'utf8')).some(
          (n: { type: string }) => n.type === 'm2m-verifier',
        );
        await deploy(hostsVerifier ? [] : hostedVerifier);
        await freshEditor();
        const before: string[] = await page.evaluate(() => {
          const ids: string[] = [];
          RED.nodes.eachNode((n: any) => {
            ids.push(n.id);
          });
          RED.nodes.eachConfig((n: any) => {
            ids.push(n.id);
          });
          return ids;
        });
        // Menu > Import > Examples > our package > folder > flow, into a new flow tab.
        await page.locator('#red-ui-header-button-sidemenu').click();
        await page.locator('#menu-item-import').click();
        await page.locator('#red-ui-clipboard-dialog .red-ui-tab', { hasText: 'Examples' }).click();
        const entry = (label: string) =>
          page.locator('#red-ui-clipboard-dialog .red-ui-treeList-label', { hasText: label }).first();
        // The dialog remembers which folders were open; a click on an open one would close it.
        const trail = [PACKAGE_NAME, ...(folder === '.' ? [] : [folder]), file];
        for (const [depth, label] of trail.entries()) {
          const next = trail[depth + 1];
          if (!next || !(await entry(next).isVisible())) await entry(label).click();
          if (next) await entry(next).waitFor({ state: 'visible', timeout: 5_000 });
        }
        await page.waitForFunction(() => $('#red-ui-clipboard-dialog-ok').is(':enabled:not(.disabled)'), undefined, {
          timeout: 5_000,
        });
        await page.locator('#red-ui-clipboard-dialog-import-opt-new').click();
        await page.locator('#red-ui-clipboard-dialog-ok').click();
        await page.locator('#red-ui-clipboard-dialog').waitFor({ state: 'hidden', timeout: 5_000 });
        // Imported nodes hang on the pointer until a click puts them down, as for a user.
        await page.locator('#red-ui-workspace-chart').click({ position: { x: 40, y: 40 } });
        const ours: string[] = await page.evaluate(old => {
          const ids: string[] = [];
          RED.nodes.eachNode((n: any) => {
            if (/^m2m-/.test(n.type) && !old.includes(n.id)) ids.push(n.id);
          });
          return ids;
        }, before);
        assert.ok(ours.length > 0, 'the example has none of our nodes');
        const invalid = await page.evaluate(ids => ids.filter((id: string) => !RED.nodes.node(id).valid), ours);
        assert.deepEqual(invalid, [], 'imported nodes the editor marks invalid');

        await page.evaluate(() => RED.sidebar.show('debug'));
        await page.evaluate(() => RED.actions.invoke('core:deploy-flows'));
        // Our nodes settle on a non-red status (green working, yellow waiting).
        await page
          .waitForFunction(
            ids =>
              ids.every((id: string) => {
                const status = RED.nodes.node(id)?.status;
                // Red only where the example needs what no example can bring: a Didit key and secret.
                const missing = /no Didit (API key|webhook secret)/.test(status?.text || '');
                return status?.fill && (status.fill !== 'red' || missing) && !/…/.test(status.text || '');
              }),
            ours,
            { timeout: 20_000 },
          )
          .catch(async () => {
            const statuses = await page.evaluate(
              ids => ids.map((id: string) => [RED.nodes.node(id).type, RED.nodes.node(id).status]),
              ours,
            );
            await page.screenshot({ path: path.join(os.tmpdir(), `m2m-editor-${file}.png`) });
            throw new Error(`statuses did not settle: ${JSON.stringify(statuses)}`);
          });
        if (file === 'quick-start') {
          // The whole chain: registered, attested, a reading checked, the decision back as a signed webhook.
          await page
            .locator('.red-ui-debug-msg', { hasText: 'attestation.decided' })
            .first()
            .waitFor({ timeout: 30_000 });
          await page.evaluate(id => {
            RED.workspaces.show(RED.nodes.node(id).z);
            $('.red-ui-notification').remove();
          }, ours[0]);
          await page.screenshot({ path: path.join(docs, 'quickstart-flow.png') });
          // With every status at its longest (token until + renew time, the ISO expiry, the counts),
          // no status label runs into another node or another label.
          await page.waitForFunction(
            () => {
              const shown: string[] = [];
              RED.nodes.eachNode((n: any) => {
                if (['stamped', 'checked'].includes(n.name) && n.status?.text) shown.push(n.name);
              });
              return shown.length === 2;
            },
            undefined,
            { timeout: 30_000 },
          );
        }
        // Laid out to be read: no status label runs into another node or label (the quick start
        // with every status at its longest), and nothing starts left of the canvas.
        const problems = await layoutProblems(page, await page.evaluate(id => RED.nodes.node(id).z, ours[0]));
        if (problems.length) await page.screenshot({ path: path.join(os.tmpdir(), `m2m-layout-${file}.png`) });
        assert.deepEqual(problems, [], `see ${path.join(os.tmpdir(), `m2m-layout-${file}.png`)}`);
        const named = (name: string) =>
          page.evaluate(wanted => {
            let id = '';
            RED.nodes.eachNode((n: any) => {
              if (n.name === wanted) id = n.id;
            });
            return id;
          }, name);
        const swapInImpostor = async () =>
          assert.equal((await page.request.post(`${url}inject/${await named('swap in impostor')}`)).status(), 200);
        // Node statuses show what a debug node last saw, whatever the sidebar's preview cuts off.
        const statusOf = async (name: string, pattern: RegExp) => {
          const id = await named(name);
          await page.waitForFunction(
            ([node, source]) => new RegExp(source).test(RED.nodes.node(node)?.status?.text ?? ''),
            [id, pattern.source],
            { timeout: 60_000 },
          );
        };
        if (file === 'attest-with-behaviour') {
          // Approved with the behaviour score as evidence once enrolled; declined on it once the
          // impostor sends.
          await statusOf('approved', /^0\.\d+$/);
          await swapInImpostor();
          await statusOf('declined or in review', /tinyml_(low|review)/);
        }
        if (file === 'genuine-vs-impostor') {
          // Enrolment takes 20 windows (~13 s of readings at 100 Hz); then the genuine sensor is
          // trusted, and the impostor, swapped in with the inject button, is not.
          const debug = (text: string) =>
            page.locator('.red-ui-debug-msg', { hasText: text }).first().waitFor({ timeout: 60_000 });
          await debug('trusted: true');
          await swapInImpostor();
          await debug('score_below_threshold');
          await page.evaluate(id => {
            RED.workspaces.show(RED.nodes.node(id).z);
            $('.red-ui-notification').remove();
          }, ours[0]);
          await page.screenshot({ path: path.join(docs, 'tinyml-flow.png') });
        }
        const errors = await page.locator('.red-ui-debug-msg-level-20').allInnerTexts();
        assert.deepEqual(errors, [], `errors in the debug sidebar: ${errors.join(' | ')}`);
      });
    }
  });

  // Last: the help panel leaves a shade over the editor that blocks further clicks.
  it('shows help with Inputs, Outputs and Details for every node (Details for config nodes)', async () => {
    for (const type of types) {
      // Wait for this node's page, titled with its palette label, in front: another sidebar tab may
      // still come forward as the editor settles after the examples, so show it until it stays.
      await page.waitForFunction(
        t => {
          const def = RED.nodes.getType(t);
          const label = (typeof def.paletteLabel === 'function' ? def.paletteLabel.call(def) : def.paletteLabel) || t;
          const shown = () =>
            $('.red-ui-help-title:visible').filter((_: number, el: Element) => $(el).text() === label);
          if (!shown().length) RED.sidebar.help.show(t);
          return shown().length > 0;
        },
        type,
        { timeout: 30_000, polling: 250 },
      );
      const headings = page.locator('.red-ui-help:visible h3');
      const titles = (await headings.allInnerTexts()).map(text => text.trim());
      const wanted = (await categoryOf(type)) === 'config' ? ['Details'] : ['Inputs', 'Outputs', 'Details'];
      for (const title of wanted)
        assert.ok(titles.includes(title), `${type} help lacks ${title}: ${titles.join(', ')}`);
    }
  });

  it('raised no script error in the page', () => {
    assert.deepEqual(pageErrors, []);
  });
});
