/**
 * doctor's look at an installed service: the node and script its unit file or property list runs
 * must exist (and should not live where they vanish), or the service restarts in a loop.
 */
import fs from 'node:fs';
import os from 'node:os';
import { installedServices, pathTrouble, LASTING_INSTALL, type InstalledService } from '../service/index.js';
import type { DoctorReport } from './doctor-report.js';

export function checkInstalledServices(report: DoctorReport, platform: NodeJS.Platform = process.platform): void {
  if (platform !== 'linux' && platform !== 'darwin') return;
  for (const service of installedServices(platform === 'darwin' ? 'macos' : 'linux', os.homedir())) checkService(service, report);
}

function checkService(service: InstalledService, report: DoctorReport): void {
  const what = `service (${service.kind})`;
  const [nodePath, scriptPath] = service.program;
  if (!nodePath || !scriptPath) return report('fail', what, `${service.unitFile} names no program to run: reinstall it (nx-s3-sidecar uninstall-service, then install-service)`);
  const missing = [nodePath, scriptPath].filter((file) => !fs.existsSync(file));
  if (missing.length > 0) {
    return report('fail', what, `${service.unitFile} runs ${missing.join(' and ')}, which no longer exist${missing.length === 1 ? 's' : ''}: the service cannot start. ${capitalise(LASTING_INSTALL)}`);
  }
  const troubles = [nodePath, scriptPath].flatMap((file) => {
    const trouble = pathTrouble(file);
    return trouble ? [`${file} is under ${trouble.what}`] : [];
  });
  if (troubles.length > 0) return report('warn', what, `${service.unitFile}: ${troubles.join('; ')}; the service breaks when it goes away. ${capitalise(LASTING_INSTALL)}`);
  report('ok', what, `${service.unitFile} runs ${nodePath} ${scriptPath}`);
}

function capitalise(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
