// The cache page's rankings as HTML (pure): each popular row links to its also-browsed view, the
// empty and failed cases say so, and hostile URLs are text, never markup or a script link.
import { describe, expect, it } from '@jest/globals';
import { escapeHtml, renderCachePage } from '../../src/portal/session-page.ts';

const PKG = 'https://example.org/hello-2.12.tar.gz';
const HOSTILE = 'https://example.org/"><script>alert(1)</script>.tar.gz';

describe('the cache page rankings', () => {
  it('ranks the popular packages, each linking to what its sessions also browsed', () => {
    const html = renderCachePage([], '', {
      window: '7d',
      popular: [
        { url: PKG, sessions: 12, lastUsedAt: '2026-01-10T11:00:00.000Z' },
        { url: HOSTILE, sessions: 3, lastUsedAt: '2026-01-10T10:00:00.000Z' },
        { url: 'javascript:alert(2)', sessions: 1, lastUsedAt: '2026-01-10T09:00:00.000Z' },
      ],
      also: { url: HOSTILE, sessions: 3, packages: [{ url: PKG, sessions: 2 }] },
    });
    expect(html).toContain('<h2>Most browsed (last 7d)</h2>');
    const alsoHref = `/cache?also=${encodeURIComponent(PKG)}&window=7d#also`;
    expect(html).toContain(`<a href="${escapeHtml(alsoHref)}">also browsed</a>`);
    expect(html).toContain(`<td class="rank">1</td>\n  <td class="ranked-url"><a href="${escapeHtml(PKG)}"`);
    expect(html).toContain('<td class="sessions">12</td>');
    expect(html).toContain('Of the 3 sessions that browsed it in the last 7d:');
    // Hostile text never becomes markup, and a javascript: URL is not a link.
    expect(html.match(/<script/g)).toHaveLength(1); // the page's own /static/portal.js
    expect(html).not.toContain('href="javascript');
    expect(html).toContain('&#34;&#62;&#60;script&#62;alert(1)&#60;/script&#62;.tar.gz');
    // The window links keep the also view.
    const windowHref = `/cache?${new URLSearchParams({ window: '24h', also: HOSTILE }).toString()}`;
    expect(html).toContain(`<a href="${escapeHtml(windowHref)}">24h</a>`);
  });

  it('says when nothing was browsed, and why there are no rankings', () => {
    const empty = renderCachePage([], '', {
      window: '24h',
      popular: [],
      also: { url: PKG, sessions: 0, packages: [] },
    });
    expect(empty).toContain('No package was browsed in the last 24h.');
    expect(empty).toContain('No session browsed it in the last 24h.');
    const alone = renderCachePage([], '', {
      window: '7d',
      popular: [],
      also: { url: PKG, sessions: 1, packages: [] },
    });
    expect(alone).toContain('The 1 session that browsed it in the last 7d browsed nothing else.');
    const failed = renderCachePage([], '', { window: 'soon', popular: [], error: 'window "soon" is not a window' });
    expect(failed).toContain('<p class="error" data-field="rankings-error">window &#34;soon&#34; is not a window</p>');
  });
});
