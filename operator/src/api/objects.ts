// The objects the controllers read and write, as they come from the API server.
import type { KubeObject } from '../runtime/client.ts';
import type { Condition } from '../runtime/conditions.ts';
import type { BrowseSessionSpec, BrowseSessionStatus } from './browsesession.ts';
import type { DownloadRequestSpec, DownloadRequestStatus } from './downloadrequest.ts';
import type { ServerPoolSpec, ServerPoolStatus } from './serverpool.ts';

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

/** The part of a core/v1 Node that placement reads. */
export interface Node extends KubeObject {
  spec?: { unschedulable?: boolean };
  status?: { conditions?: (Condition & { lastHeartbeatTime?: string })[] };
}
