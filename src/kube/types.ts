import type * as k8s from '@kubernetes/client-node'

/**
 * API objects as KubeClient returns them: parsed JSON, so every timestamp (metav1.Time,
 * MicroTime) is an RFC 3339 string where client-node's classes declare Date. Same names as
 * client-node's, so code reads like the API reference; import them from here, not from
 * '@kubernetes/client-node'. (client-node's ObjectSerializer would make the Dates real, but
 * loading it costs several times node's start-up, which every command would pay.)
 */
export type Wire<T> = T extends Date ? string : T extends Array<infer U> ? Array<Wire<U>> : T extends object ? {[K in keyof T]: Wire<T[K]>} : T

export type CoreV1EventList = Wire<k8s.CoreV1EventList>
export type V1ConfigMap = Wire<k8s.V1ConfigMap>
export type V1Container = Wire<k8s.V1Container>
export type V1DaemonSet = Wire<k8s.V1DaemonSet>
export type V1DaemonSetList = Wire<k8s.V1DaemonSetList>
export type V1Deployment = Wire<k8s.V1Deployment>
export type V1DeploymentList = Wire<k8s.V1DeploymentList>
export type V1EndpointSlice = Wire<k8s.V1EndpointSlice>
export type V1EndpointSliceList = Wire<k8s.V1EndpointSliceList>
export type V1Endpoints = Wire<k8s.V1Endpoints>
export type V1EnvVar = Wire<k8s.V1EnvVar>
export type V1LabelSelector = Wire<k8s.V1LabelSelector>
export type V1Lease = Wire<k8s.V1Lease>
export type V1LeaseList = Wire<k8s.V1LeaseList>
export type V1LifecycleHandler = Wire<k8s.V1LifecycleHandler>
export type V1Node = Wire<k8s.V1Node>
export type V1NodeList = Wire<k8s.V1NodeList>
export type V1NodeSelectorRequirement = Wire<k8s.V1NodeSelectorRequirement>
export type V1ObjectMeta = Wire<k8s.V1ObjectMeta>
export type V1Pod = Wire<k8s.V1Pod>
export type V1PodList = Wire<k8s.V1PodList>
export type V1PodSpec = Wire<k8s.V1PodSpec>
export type V1PodTemplateSpec = Wire<k8s.V1PodTemplateSpec>
export type V1Probe = Wire<k8s.V1Probe>
export type V1Service = Wire<k8s.V1Service>
export type V1ServiceList = Wire<k8s.V1ServiceList>
export type V1Taint = Wire<k8s.V1Taint>
export type V1Toleration = Wire<k8s.V1Toleration>
