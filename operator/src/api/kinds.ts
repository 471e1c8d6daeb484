// The three kinds of codebrowse, in the order they are installed.
import { browseSessionKind } from './browsesession.ts';
import { downloadRequestKind } from './downloadrequest.ts';
import type { KindDefinition } from './schema.ts';
import { serverPoolKind } from './serverpool.ts';

export const KINDS: readonly KindDefinition[] = [serverPoolKind, downloadRequestKind, browseSessionKind];
