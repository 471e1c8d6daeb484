// The objects the controllers read and write, as they come from the API server.
import type { KubeObject } from '../runtime/client.ts';
import type { Condition } from '../runtime/conditions.ts';
import type { BrowseSessionSpec, BrowseSessionStatus } from './browsesession.ts';
import type { DownloadRequestSpec, DownloadRequestStatus } from './downloadrequest.ts';
import type { ServerPoolSpec, ServerPoolStatus } from './serverpool.ts';
import type { SessionArchiveSpec, SessionArchiveStatus } from './sessionarchive.ts';

export interface ServerPool extends KubeObject {
  spec: ServerPoolSpec;
  status?: ServerPoolStatus;
}

export interface BrowseSession extends KubeObject {
  spec: BrowseSessionSpec;
  status?: BrowseSessionStatus;
}

export interface DownloadRequest extends KubeObject {
  spec: DownloadRequestSpec;
  status?: DownloadRequestStatus;
}

export interface SessionArchive extends KubeObject {
  spec: SessionArchiveSpec;
  status?: SessionArchiveStatus;
}

/** The part of a core/v1 Node that placement reads. */
export interface Node extends KubeObject {
  spec?: { unschedulable?: boolean };
  status?: { conditions?: (Condition & { lastHeartbeatTime?: string })[] };
}
