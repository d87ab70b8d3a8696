import {strict as assert} from 'node:assert'

import {CliError} from '../../../src/errors.js'
import {
  defaultRegistryFor,
  formatVersion,
  maxKubeletLag,
  parseReportedVersion,
  parseTargetVersion,
  sameVersion,
  supportsDaemonSetSurge,
  supportsPortSharing,
} from '../../../src/upgrade/versions.js'

describe('upgrade versions', () => {
  const accepted: Array<[string, string]> = [
    ['v1.15.0', 'v1.15.0'],
    ['1.15.0', 'v1.15.0'],
    ['v1.16.0-rc.1', 'v1.16.0-rc.1'],
    ['1.16.0-alpha.0', 'v1.16.0-alpha.0'],
    ['v1.37.2', 'v1.37.2'],
    ['v1.38.0-broken', 'v1.38.0-broken'],
    ['v1.14.0', 'v1.14.0'],
  ]
  for (const [text, expected] of accepted) {
    it(`accepts ${text}`, () => assert.equal(formatVersion(parseTargetVersion(text)), expected))
  }

  const refused: Array<[string, RegExp]> = [
    ['1.15', /not a Kubernetes version/],
    ['v1.15', /not a Kubernetes version/],
    ['V1.15.0', /not a Kubernetes version/],
    ['=1.15.0', /not a Kubernetes version/],
    [' 1.15.0', /not a Kubernetes version/],
    ['1.15.0.1', /not a Kubernetes version/],
    ['latest', /not a Kubernetes version/],
    ['', /not a Kubernetes version/],
    ['v2.0.0', /Kubernetes versions are 1.x.y/],
    ['v1.13.12', /older than v1.14.0 are not supported/],
  ]
  for (const [text, message] of refused) {
    it(`refuses ${JSON.stringify(text)} in one line`, () => {
      assert.throws(
        () => parseTargetVersion(text),
        (error: unknown) => error instanceof CliError && message.test(error.message) && !error.message.includes('\n'),
      )
    })
  }

  it('reads vendor and image versions leniently', () => {
    assert.equal(parseReportedVersion('v1.28.3+k3s1')?.version, '1.28.3')
    assert.equal(parseReportedVersion('v1.27.4-eks-2d98532')?.version, '1.27.4-eks-2d98532')
    assert.equal(parseReportedVersion('v1.14.10')?.version, '1.14.10')
    assert.equal(parseReportedVersion('latest'), undefined)
    assert.equal(parseReportedVersion(undefined), undefined)
  })

  it('ignores build metadata when comparing', () => {
    assert.ok(sameVersion(parseReportedVersion('v1.28.3+k3s1')!, parseTargetVersion('v1.28.3')))
    assert.ok(!sameVersion(parseTargetVersion('v1.16.0-rc.1'), parseTargetVersion('v1.16.0')))
  })

  it('knows when features arrived', () => {
    const v = parseTargetVersion
    assert.deepEqual([v('v1.18.20'), v('v1.19.0'), v('v1.37.0')].map(supportsPortSharing), [false, true, true])
    assert.deepEqual([v('v1.21.14'), v('v1.22.0')].map(supportsDaemonSetSurge), [false, true])
    assert.deepEqual([v('v1.24.17'), v('v1.25.0')].map(defaultRegistryFor), ['k8s.gcr.io', 'registry.k8s.io'])
    assert.deepEqual([v('v1.24.0'), v('v1.25.0')].map(maxKubeletLag), [2, 3])
  })
})
