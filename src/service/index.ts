export { planService, currentOs, defaultServiceInputs, SERVICE_NAME, LAUNCHD_LABEL, type ServicePlan, type ServiceInputs, type ServiceKind } from './service-plan.js';
