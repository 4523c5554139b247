/** Sparkplug B topics: `spBv1.0/<group>/<type>/<edge>[/<device>]` and the host's `spBv1.0/STATE/<host>`. */

export const NAMESPACE = 'spBv1.0';

export type NodeMessageType = 'NBIRTH' | 'NDEATH' | 'NDATA' | 'NCMD';
export type DeviceMessageType = 'DBIRTH' | 'DDEATH' | 'DDATA' | 'DCMD';

export interface SparkplugTopics {
  node(type: NodeMessageType): string;
  device(type: DeviceMessageType, deviceId: string): string;
  /** The primary host's STATE topic. */
  state(hostId: string): string;
  /** The device id of a DCMD topic of this edge node, or undefined. */
  dcmdDevice(topic: string): string | undefined;
}

export function sparkplugTopics(groupId: string, edgeNodeId: string): SparkplugTopics {
  const base = (type: string): string => `${NAMESPACE}/${groupId}/${type}/${edgeNodeId}`;
  const dcmdPrefix = `${base('DCMD')}/`;
  return {
    node: (type) => base(type),
    device: (type, deviceId) => `${base(type)}/${deviceId}`,
    state: (hostId) => `${NAMESPACE}/STATE/${hostId}`,
    dcmdDevice: (topic) => {
      if (!topic.startsWith(dcmdPrefix)) return undefined;
      const id = topic.slice(dcmdPrefix.length);
      return id.length > 0 && !id.includes('/') ? id : undefined;
    },
  };
}
