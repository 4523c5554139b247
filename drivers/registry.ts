/**
 * Every driver rackpilot knows. A test fails when a folder under drivers/
 * (other than lib/) is not listed here.
 */
import type { DriverDefinition } from './contract.js';
import { antminerDriver } from './antminer/index.js';
import { auradineDriver } from './auradine/index.js';
import { avalonDriver } from './avalon/index.js';
import { braiinsDriver } from './braiins/index.js';
import { controllerDriver } from './controller/index.js';
import { epicDriver } from './epic/index.js';
import { gpioDriver } from './gpio/index.js';
import { gpuDriver } from './gpu/index.js';
import { luxosDriver } from './luxos/index.js';
import { modbusMeterDriver } from './modbus-meter/index.js';
import { pduModbusDriver } from './pdu-modbus/index.js';
import { pduSnmpDriver } from './pdu-snmp/index.js';
import { vnishDriver } from './vnish/index.js';
import { whatsminerV2Driver } from './whatsminer-v2/index.js';
import { whatsminerV3Driver } from './whatsminer-v3/index.js';

export const DRIVERS = [antminerDriver, avalonDriver, braiinsDriver, luxosDriver, vnishDriver, whatsminerV2Driver, whatsminerV3Driver, epicDriver, auradineDriver, gpioDriver, controllerDriver, modbusMeterDriver, pduSnmpDriver, pduModbusDriver, gpuDriver] as const;

export type RegisteredDriver = (typeof DRIVERS)[number];

export function findDriver(id: string): DriverDefinition | undefined {
  return (DRIVERS as readonly DriverDefinition[]).find((d) => d.id === id);
}
