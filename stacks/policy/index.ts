import { PolicyPack } from '@pulumi/policy';
import { policies } from './policies.js';

/** Run with `pulumi preview --policy-pack stacks/policy`, or pass the directory in the Automation API's `policyPacks`. */
new PolicyPack('tenantry', { policies, enforcementLevel: 'mandatory' });
