// The kinds of codebrowse, in the order they are installed.
import { browseSessionKind } from './browsesession.ts';
import { downloadRequestKind } from './downloadrequest.ts';
import type { KindDefinition } from './schema.ts';
import { serverPoolKind } from './serverpool.ts';
import { sessionArchiveKind } from './sessionarchive.ts';

export const KINDS: readonly KindDefinition[] = [
  serverPoolKind,
  downloadRequestKind,
  browseSessionKind,
  sessionArchiveKind,
];
