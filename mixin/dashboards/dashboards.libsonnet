(import 'overview.libsonnet') + (import 'team.libsonnet')
