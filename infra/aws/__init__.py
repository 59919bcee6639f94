"""The CDK app that deploys sluice: a thin stack composing one construct per capability."""
