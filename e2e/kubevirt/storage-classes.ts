// The names the storage player (storage.ts) gives the cluster's storage: a CSI driver named as
// csi-driver-host-path names itself, its default StorageClass and VolumeSnapshotClass.
export const DRIVER = 'hostpath.csi.k8s.io';
export const STORAGE_CLASS = 'csi-hostpath-sc';
export const SNAPSHOT_CLASS = 'csi-hostpath-snapclass';
