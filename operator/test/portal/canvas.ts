// The noVNC console in Chromium: how many colours its canvas shows (0 before it has a framebuffer).
// More than one means a screen arrived, not a blank. Every `stride`-th pixel is looked at.
import type { Page } from 'playwright-core';

export function consoleColours(page: Page, stride: number): Promise<number> {
  return page.evaluate((step) => {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the browser's DOM, not typed in this Node project
    const canvas = (globalThis as any).document.querySelector('#screen canvas');
    if (!canvas || canvas.width < 100) return 0;
    const data: Uint8ClampedArray = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    const seen = new Set<number>();
    for (let i = 0; i < data.length; i += 4 * step) seen.add((data[i]! << 16) | (data[i + 1]! << 8) | data[i + 2]!);
    return seen.size;
  }, stride);
}
