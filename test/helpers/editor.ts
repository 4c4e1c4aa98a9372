/** Waiting on Node-RED's editor in Playwright, shared by the Chromium suites. */
import type { Page } from 'playwright-core';

declare const RED: any;
declare const $: any;

/**
 * Waits until the editor has finished loading and turns jQuery animations off (headless
 * Chromium does not run the animation frames they wait for, so trays would slide and shades
 * fade forever). Finished means past the loader's end: just before it, the editor brings its
 * first sidebar tab forward, which would hide a tab a test had already opened.
 */
export async function editorReady(page: Page): Promise<void> {
  await page.waitForFunction(
    () =>
      RED?.nodes &&
      RED.sidebar &&
      $('#red-ui-palette-base-category-m2m_identity').length > 0 &&
      $('.red-ui-header-toolbar').is(':visible') &&
      $('#red-ui-loading-progress').length > 0 &&
      !$('#red-ui-loading-progress').is(':visible'),
    undefined,
    { timeout: 60_000, polling: 100 },
  );
  await page.evaluate(() => {
    $.fx.off = true;
  });
}
