// The file name a guest agent installs a package by: its suffix picks the install rule, so it must
// keep the URL's suffix, and it must never carry a path or a hidden-file dot into the guest.
import { describe, expect, it } from '@jest/globals';
import { packageFileName } from '../../src/portal/agent-api.ts';

describe('packageFileName', () => {
  it.each([
    ['https://example.org/dl/hello_1.0_all.deb', 'hello_1.0_all.deb'],
    ['https://example.org/dl/tool-2.1.tar.gz?mirror=3#x', 'tool-2.1.tar.gz'],
    ['ftp://ftp.example.org/pub/a%20b.zip', 'a_b.zip'],
    ['https://example.org/dl/..%2F..%2Fetc%2Fpasswd', '_.._etc_passwd'],
    ['https://example.org/dl/.bashrc', 'bashrc'],
    ['https://example.org/', 'package-3'],
    ['https://example.org/dl/%2F%2F', 'package-3'],
    ['https://example.org/dl/caf%C3%A9.rpm', 'caf_.rpm'],
    ['not a url', 'package-3'],
  ])('%s → %s', (url, name) => {
    expect(packageFileName(url, 3)).toBe(name);
  });

  it('keeps the suffix of a very long name', () => {
    const name = packageFileName(`https://example.org/${'x'.repeat(500)}.tar.xz`, 0);
    expect(name.length).toBeLessThanOrEqual(128);
    expect(name.endsWith('.tar.xz')).toBe(true);
  });
});
