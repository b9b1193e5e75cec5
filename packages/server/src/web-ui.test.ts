// The web page end to end in headless Chromium (Debian's package, driven by playwright-core).
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type BrowserContext } from 'playwright-core';
import { startTestServer, type TestServer } from './testing/harness.js';
import { jpegImage, pngImage } from './testing/images.js';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = fileURLToPath(new URL('../../../test-artifacts/', import.meta.url));

/** The few browser globals the page-side callbacks use (this file compiles without DOM types). */
interface BrowserGlobals {
  document: {
    querySelector(sel: string): { textContent: string | null } | null;
    getElementById(id: string): { dispatchEvent(e: unknown): boolean } | null;
  };
  DataTransfer: new () => { items: { add(f: unknown): void } };
  File: new (parts: unknown[], name: string, opts: { type: string }) => unknown;
  DragEvent: new (type: string, init: Record<string, unknown>) => unknown;
  atob(s: string): string;
}

let s: TestServer;
let ctx: BrowserContext | null = null;
let profile = '';
beforeAll(async () => {
  s = await startTestServer({ model: { model: 'fake?delay=25' } });
});
afterAll(async () => {
  await ctx?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  await s?.close();
});

async function launch(): Promise<BrowserContext> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium is not installed at ${CHROMIUM}; the web UI test needs Debian's package: apt-get install -y chromium`);
  }
  profile = mkdtempSync(path.join(tmpdir(), 'mobillama-chromium-'));
  // A closed network stalls Chromium's background services unless they are turned off.
  return chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
    viewport: { width: 1100, height: 760 },
  });
}

describe('web page', () => {
  it('pick an image, ask, watch the answer stream, ask a follow-up, drop a new image', async () => {
    const png = await pngImage(64, 48);
    const jpg = await jpegImage(80, 60);
    ctx = await launch();
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    await page.goto(s.url);
    await expect.poll(() => page.textContent('#model')).toBe('fake-mobillama-v');

    await page.setInputFiles('#file', { name: 'red.png', mimeType: 'image/png', buffer: png });
    await page.waitForSelector('#preview:not([hidden])');

    await page.fill('#question', 'What is in the picture?');
    await page.click('#ask');
    // Streaming: partial text is visible while the answer is still coming.
    const partial = await page.waitForFunction(() => {
      const el = (globalThis as unknown as BrowserGlobals).document.querySelector('.msg.assistant.streaming');
      return el?.textContent ? el.textContent : null;
    });
    const partialText = String(await partial.jsonValue());
    const first = page.locator('.msg.assistant.done').nth(0);
    await first.waitFor();
    const firstText = (await first.textContent()) ?? '';
    expect(firstText).toContain(`You asked: "What is in the picture?". The image has ${png.length} bytes.`);
    expect(partialText.length).toBeLessThan(firstText.length);
    expect(firstText.startsWith(partialText)).toBe(true);

    // A follow-up: the same image travels with the conversation.
    await page.fill('#question', 'And what colour is it?');
    await page.press('#question', 'Enter');
    const second = page.locator('.msg.assistant.done').nth(1);
    await second.waitFor();
    expect(await second.textContent()).toContain(`You asked: "And what colour is it?". The image has ${png.length} bytes. This is turn 2.`);
    expect(await page.locator('.msg.user').count()).toBe(2);

    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, 'web-ui.png'), fullPage: true });

    // Dropping another image starts a new conversation about it.
    await page.evaluate((b64) => {
      const w = globalThis as unknown as BrowserGlobals;
      const bytes = Uint8Array.from(w.atob(b64), (c) => c.charCodeAt(0));
      const dt = new w.DataTransfer();
      dt.items.add(new w.File([bytes], 'blue.jpg', { type: 'image/jpeg' }));
      w.document.getElementById('drop')!.dispatchEvent(new w.DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    }, jpg.toString('base64'));
    await expect.poll(() => page.locator('.msg').count()).toBe(0);
    await page.fill('#question', 'Now?');
    await page.click('#ask');
    const third = page.locator('.msg.assistant.done').nth(0);
    await third.waitFor();
    expect(await third.textContent()).toContain(`You asked: "Now?". The image has ${jpg.length} bytes.`);
    expect(pageErrors).toEqual([]);
  });
});
