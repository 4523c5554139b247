/**
 * Vendor profiles of the SNMP PDU driver, as data (CONVENTIONS.md #2): which
 * OIDs carry inlet/phase/outlet active power and with what scaling, where the
 * outlet state is and what its values mean, and what to write to switch an
 * outlet. Sources and confidence: api-facts.md.
 *
 * OID templates (no leading dot) take these placeholders, filled from config:
 *   {u} unit: PDU id (Raritan), unit (Sentry4), strap/daisy-chain index (Eaton), PDU index (Vertiv)
 *   {c} cord / inlet / input (Sentry4 cord, Raritan inlet, Eaton input)
 *   {o} outlet number, {p} phase / pole number
 */

export const PROFILE_IDS = ['apc-rpdu2', 'raritan-pdu2', 'sentry4', 'eaton-epdu', 'vertiv-v5'] as const;
export type ProfileId = (typeof PROFILE_IDS)[number];

/** What an outlet-state value means. Transitional states count as neither on nor off. */
export type OutletStateName = 'on' | 'off' | 'pendingOn' | 'pendingOff';

export interface PowerPoint {
  /** OID template of the raw value. */
  oid: string;
  /** Watts per raw unit (APC reports hundredths of kW: 10). */
  scale: number;
  /**
   * Raritan: OID template of the sensor's decimal digits; the value in the
   * sensor's unit is raw / 10^digits (read once, then cached).
   */
  digitsOid?: string;
}

export interface OutletWrite {
  /** OID template written (an Integer). */
  oid: string;
  value: number;
}

export interface SnmpPduProfile {
  id: ProfileId;
  vendor: string;
  mib: string;
  /** Default {u} and {c} when config gives none. */
  defaults: { unit: number; cord: number };
  /** Inlet / cord / total active power: `Reading.powerW`. */
  totalPower: PowerPoint;
  /** Per-phase (or per-pole) active power, `phase<p>PowerW`. */
  phasePower?: PowerPoint;
  /** Per-outlet active power, `outlet<o>PowerW` (metered outlets only). */
  outletPower?: PowerPoint;
  outletState: {
    oid: string;
    /** Raw values per meaning; the first of each list is what the simulator reports. */
    values: Partial<Record<OutletStateName, readonly number[]>>;
  };
  switchOn: OutletWrite;
  switchOff: OutletWrite;
  /** Added to the error when the PDU rejects a switch write. */
  rejectHint: string;
}

const APC = '1.3.6.1.4.1.318.1.1.26';
const RARITAN = '1.3.6.1.4.1.13742.6';
const SENTRY4 = '1.3.6.1.4.1.1718.4.1';
const EATON = '1.3.6.1.4.1.534.6.6.7';
const VERTIV = '1.3.6.1.4.1.21239.5.2.3';

/** Raritan sensor type activePower(5). */
const RARITAN_ACTIVE_POWER = 5;

export const PROFILES: Readonly<Record<ProfileId, SnmpPduProfile>> = {
  'apc-rpdu2': {
    id: 'apc-rpdu2',
    vendor: 'APC (Schneider Electric) switched rack PDU, rPDU2 (AP86xx/AP89xx)',
    mib: 'PowerNet-MIB rPDU2',
    defaults: { unit: 1, cord: 1 },
    // rPDU2DeviceStatusPower, hundredths of kW
    totalPower: { oid: `${APC}.4.3.1.5.{u}`, scale: 10 },
    // rPDU2PhaseStatusPower, hundredths of kW
    phasePower: { oid: `${APC}.6.3.1.7.{p}`, scale: 10 },
    // rPDU2OutletMeteredStatusPower, W (metered-by-outlet models only)
    outletPower: { oid: `${APC}.9.4.3.1.7.{o}`, scale: 1 },
    // rPDU2OutletSwitchedStatusState: off(1), on(2)
    outletState: { oid: `${APC}.9.2.3.1.5.{o}`, values: { off: [1], on: [2] } },
    // rPDU2OutletSwitchedControlCommand: immediateOn(1), immediateOff(2)
    switchOn: { oid: `${APC}.9.2.4.1.5.{o}`, value: 1 },
    switchOff: { oid: `${APC}.9.2.4.1.5.{o}`, value: 2 },
    rejectHint: 'check that the community is the read-write one and that the outlet is not locked',
  },
  'raritan-pdu2': {
    id: 'raritan-pdu2',
    vendor: 'Raritan PX2/PX3',
    mib: 'PDU2-MIB',
    defaults: { unit: 1, cord: 1 },
    // measurementsInletSensorValue.<pdu>.<inlet>.activePower / inletSensorDecimalDigits
    totalPower: { oid: `${RARITAN}.5.2.3.1.4.{u}.{c}.${RARITAN_ACTIVE_POWER}`, scale: 1, digitsOid: `${RARITAN}.3.3.4.1.7.{u}.{c}.${RARITAN_ACTIVE_POWER}` },
    // measurementsInletPoleSensorValue.<pdu>.<inlet>.<pole>.activePower / inletPoleSensorDecimalDigits
    phasePower: {
      oid: `${RARITAN}.5.2.4.1.4.{u}.{c}.{p}.${RARITAN_ACTIVE_POWER}`,
      scale: 1,
      digitsOid: `${RARITAN}.3.3.6.1.7.{u}.{c}.{p}.${RARITAN_ACTIVE_POWER}`,
    },
    // measurementsOutletSensorValue.<pdu>.<outlet>.activePower / outletSensorDecimalDigits
    outletPower: { oid: `${RARITAN}.5.4.3.1.4.{u}.{o}.${RARITAN_ACTIVE_POWER}`, scale: 1, digitsOid: `${RARITAN}.3.5.4.1.7.{u}.{o}.${RARITAN_ACTIVE_POWER}` },
    // outletSwitchingState (SensorStateEnumeration): on(7), off(8)
    outletState: { oid: `${RARITAN}.4.1.2.1.3.{u}.{o}`, values: { on: [7], off: [8] } },
    // switchingOperation: off(0), on(1), cycle(2)
    switchOn: { oid: `${RARITAN}.4.1.2.1.2.{u}.{o}`, value: 1 },
    switchOff: { oid: `${RARITAN}.4.1.2.1.2.{u}.{o}`, value: 0 },
    rejectHint: 'check the read-write community / v3 user rights and that the outlet is switchable (not non-switchable or in a locked state)',
  },
  sentry4: {
    id: 'sentry4',
    vendor: 'Server Technology (Legrand) Sentry4 / PRO1 / PRO2',
    mib: 'Sentry4-MIB',
    defaults: { unit: 1, cord: 1 },
    // st4CordActivePower, W
    totalPower: { oid: `${SENTRY4}.3.3.1.3.{u}.{c}`, scale: 1 },
    // st4PhaseActivePower, W
    phasePower: { oid: `${SENTRY4}.5.3.1.8.{u}.{c}.{p}`, scale: 1 },
    // st4OutletActivePower, W
    outletPower: { oid: `${SENTRY4}.8.3.1.7.{u}.{c}.{o}`, scale: 1 },
    // st4OutletControlState: fixedOn 1, idleOff 2, idleOn 3, wakeOff 4, wakeOn 5, ocpOff 6, ocpOn 7,
    // pendOn 8, pendOff 9, off 10, on 11, reboot 12, shutdown 13, lockedOff 14, lockedOn 15,
    // eventOff 16, eventOn 17, schedOff 18, schedOn 19 (notSet 0: unknown)
    outletState: {
      oid: `${SENTRY4}.8.5.1.1.{u}.{c}.{o}`,
      values: { on: [11, 1, 3, 5, 7, 15, 17, 19], off: [10, 2, 4, 6, 13, 14, 16, 18], pendingOn: [8, 12], pendingOff: [9] },
    },
    // st4OutletControlAction: on(1), off(2), reboot(3)
    switchOn: { oid: `${SENTRY4}.8.5.1.2.{u}.{c}.{o}`, value: 1 },
    switchOff: { oid: `${SENTRY4}.8.5.1.2.{u}.{c}.{o}`, value: 2 },
    rejectHint: 'check the read-write community / v3 user and that the outlet is not locked (lockedOn/lockedOff) or fixed-on',
  },
  'eaton-epdu': {
    id: 'eaton-epdu',
    vendor: 'Eaton ePDU (G3 and later)',
    mib: 'EATON-EPDU-MIB',
    // strap index 0 is the first (or only) PDU of a daisy chain
    defaults: { unit: 0, cord: 1 },
    // inputTotalWatts.<strap>.<input>, W
    totalPower: { oid: `${EATON}.3.5.1.4.{u}.{c}`, scale: 1 },
    // outletWatts.<strap>.<outlet>, W
    outletPower: { oid: `${EATON}.6.5.1.3.{u}.{o}`, scale: 1 },
    // outletControlStatus: off(0), on(1), pendingOff(2), pendingOn(3)
    outletState: { oid: `${EATON}.6.6.1.2.{u}.{o}`, values: { off: [0], on: [1], pendingOff: [2], pendingOn: [3] } },
    // outletControlOnCmd / outletControlOffCmd: the value is a delay in seconds (0: now, -1: cancel)
    switchOn: { oid: `${EATON}.6.6.1.4.{u}.{o}`, value: 0 },
    switchOff: { oid: `${EATON}.6.6.1.3.{u}.{o}`, value: 0 },
    rejectHint: 'check the read-write community / v3 user and that the outlet is switchable',
  },
  'vertiv-v5': {
    id: 'vertiv-v5',
    vendor: 'Vertiv (Geist) rack PDU, V5 firmware',
    mib: 'VERTIV-V5-MIB',
    defaults: { unit: 1, cord: 1 },
    // total real power of the PDU, W
    totalPower: { oid: `${VERTIV}.1.1.9.{u}`, scale: 1 },
    // phase real power, W
    phasePower: { oid: `${VERTIV}.2.1.12.{p}`, scale: 1 },
    // outlet real power, W
    outletPower: { oid: `${VERTIV}.6.1.12.{o}`, scale: 1 },
    // control outlet status: off(0), on(1) (unverified: see api-facts.md)
    outletState: { oid: `${VERTIV}.5.1.4.{o}`, values: { off: [0], on: [1] } },
    // control outlet action: cancel(1), on(2), off(4), reboot(6)
    switchOn: { oid: `${VERTIV}.5.1.6.{o}`, value: 2 },
    switchOff: { oid: `${VERTIV}.5.1.6.{o}`, value: 4 },
    rejectHint: 'Vertiv PDUs accept outlet commands only when the outlet is in manual control mode: set it to manual in the PDU web UI',
  },
};

export interface OidParams {
  unit: number;
  cord: number;
  outlet?: number;
  phase?: number;
}

/** Fills an OID template. */
export function fillOid(template: string, p: OidParams): string {
  return template
    .replace('{u}', String(p.unit))
    .replace('{c}', String(p.cord))
    .replace('{o}', String(p.outlet ?? 0))
    .replace('{p}', String(p.phase ?? 0));
}

/** The meaning of a raw outlet-state value, or null when the profile does not know it. */
export function decodeOutletState(profile: SnmpPduProfile, raw: number): OutletStateName | null {
  for (const [name, values] of Object.entries(profile.outletState.values) as [OutletStateName, readonly number[]][]) {
    if (values.includes(raw)) return name;
  }
  return null;
}
