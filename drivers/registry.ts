/**
 * Every driver rackpilot knows. A test fails when a folder under drivers/
 * (other than lib/) is not listed here.
 */
import type { DriverDefinition } from './contract.js';
import { luxosDriver } from './luxos/index.js';

export const DRIVERS = [luxosDriver] as const;

export type RegisteredDriver = (typeof DRIVERS)[number];

export function findDriver(id: string): DriverDefinition | undefined {
  return (DRIVERS as readonly DriverDefinition[]).find((d) => d.id === id);
}
