// The kinds codebrowse reads or writes, with their REST names. Explicit instead of discovery: the
// operator's RBAC lists the same set, and a typo fails in a unit test, not at 3 a.m.

export interface ResourceType {
  group: string;
  version: string;
  kind: string;
  /** Lower-case plural used in the REST path. */
  plural: string;
  namespaced: boolean;
}

export function apiVersionOf(type: ResourceType): string {
  return type.group ? `${type.group}/${type.version}` : type.version;
}

/** "browsesessions.codebrowse.io", as RBAC, kubectl and metrics name it. */
export function resourceName(type: ResourceType): string {
  return type.group ? `${type.plural}.${type.group}` : type.plural;
}

/** The REST path of a collection (name undefined) or of one object. */
export function resourcePath(type: ResourceType, namespace?: string, name?: string, subresource?: string): string {
  const prefix = type.group ? `/apis/${type.group}/${type.version}` : `/api/${type.version}`;
  if (type.namespaced && name !== undefined && !namespace)
    throw new Error(`${type.kind} ${name} is namespaced: a namespace is needed`);
  const ns = type.namespaced && namespace ? `/namespaces/${encodeURIComponent(namespace)}` : '';
  const one = name !== undefined ? `/${encodeURIComponent(name)}` : '';
  const sub = subresource ? `/${subresource}` : '';
  return `${prefix}${ns}/${type.plural}${one}${sub}`;
}

function kind(group: string, version: string, kindName: string, plural: string, namespaced = true): ResourceType {
  return { group, version, kind: kindName, plural, namespaced };
}

export const Resources = {
  Namespace: kind('', 'v1', 'Namespace', 'namespaces', false),
  Node: kind('', 'v1', 'Node', 'nodes', false),
  ConfigMap: kind('', 'v1', 'ConfigMap', 'configmaps'),
  Secret: kind('', 'v1', 'Secret', 'secrets'),
  Event: kind('', 'v1', 'Event', 'events'),
  PersistentVolumeClaim: kind('', 'v1', 'PersistentVolumeClaim', 'persistentvolumeclaims'),
  Lease: kind('coordination.k8s.io', 'v1', 'Lease', 'leases'),
  Role: kind('rbac.authorization.k8s.io', 'v1', 'Role', 'roles'),
  RoleBinding: kind('rbac.authorization.k8s.io', 'v1', 'RoleBinding', 'rolebindings'),
  ServerPool: kind('codebrowse.io', 'v1alpha1', 'ServerPool', 'serverpools', false),
  DownloadRequest: kind('codebrowse.io', 'v1alpha1', 'DownloadRequest', 'downloadrequests'),
  BrowseSession: kind('codebrowse.io', 'v1alpha1', 'BrowseSession', 'browsesessions'),
  SessionArchive: kind('codebrowse.io', 'v1alpha1', 'SessionArchive', 'sessionarchives'),
  VirtualMachine: kind('kubevirt.io', 'v1', 'VirtualMachine', 'virtualmachines'),
  VirtualMachineInstance: kind('kubevirt.io', 'v1', 'VirtualMachineInstance', 'virtualmachineinstances'),
  VirtualMachineSnapshot: kind('snapshot.kubevirt.io', 'v1beta1', 'VirtualMachineSnapshot', 'virtualmachinesnapshots'),
  VirtualMachineSnapshotContent: kind(
    'snapshot.kubevirt.io',
    'v1beta1',
    'VirtualMachineSnapshotContent',
    'virtualmachinesnapshotcontents',
  ),
  VirtualMachineClone: kind('clone.kubevirt.io', 'v1beta1', 'VirtualMachineClone', 'virtualmachineclones'),
  DNSEndpoint: kind('externaldns.k8s.io', 'v1alpha1', 'DNSEndpoint', 'dnsendpoints'),
  /** Multus's (the Network Plumbing Working Group's): a pool network on the hosts' LAN. */
  NetworkAttachmentDefinition: kind(
    'k8s.cni.cncf.io',
    'v1',
    'NetworkAttachmentDefinition',
    'network-attachment-definitions',
  ),
} as const satisfies Record<string, ResourceType>;

export { kind as defineResource };
