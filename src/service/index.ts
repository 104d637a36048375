export { planService, currentOs, defaultServiceInputs, SERVICE_NAME, LAUNCHD_LABEL, type ServicePlan, type ServiceInputs, type ServiceKind } from './service-plan.js';
export { installedServices, serviceFilePath, execStartWords, plistProgram, type InstalledService } from './installed-service.js';
export { pathTrouble, LASTING_INSTALL, type PathTrouble } from './install-paths.js';
