{{/*
Name of the chart, or nameOverride.
*/}}
{{- define "gpushift.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the base of every resource name. Truncated to 40 characters so that the
longest derived name, "<fullname>-notebook-sidecar", stays within 63.
*/}}
{{- define "gpushift.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "gpushift.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "gpushift.labels" -}}
helm.sh/chart: {{ include "gpushift.chart" . }}
{{ include "gpushift.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gpushift
{{- end }}

{{/*
Selector labels (without component).
*/}}
{{- define "gpushift.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpushift.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector labels of the webhook pods.
*/}}
{{- define "gpushift.webhookSelectorLabels" -}}
{{ include "gpushift.selectorLabels" . }}
app.kubernetes.io/component: webhook
{{- end }}

{{/* Names derived from the full name. */}}
{{- define "gpushift.serviceAccountName" -}}
{{- include "gpushift.fullname" . }}-webhook
{{- end }}

{{- define "gpushift.serviceName" -}}
{{- include "gpushift.fullname" . }}-webhook
{{- end }}

{{- define "gpushift.configMapName" -}}
{{- include "gpushift.fullname" . }}-config
{{- end }}

{{/* Secret the webhook keeps its self-managed CA and serving certificate in. */}}
{{- define "gpushift.selfManagedSecretName" -}}
{{- include "gpushift.fullname" . }}-tls
{{- end }}

{{/* Certificate (and Issuer) of certManager mode, and the Secret it fills. */}}
{{- define "gpushift.certificateName" -}}
{{- include "gpushift.fullname" . }}-webhook
{{- end }}

{{- define "gpushift.certManagerSecretName" -}}
{{- include "gpushift.fullname" . }}-webhook-tls
{{- end }}

{{/* Lease for leader election of the migration guard (one replica acts). */}}
{{- define "gpushift.guardLeaseName" -}}
{{- include "gpushift.fullname" . }}-guard
{{- end }}

{{/* Whether the webhook publishes the GPU capacity: it runs with the guard (its Lease). */}}
{{- define "gpushift.capacityOn" -}}
{{- if and .Values.capacity.enabled .Values.guard.enabled .Values.rbac.migrationGuard }}true{{ end }}
{{- end }}

{{/* ConfigMap the webhook publishes the GPU capacity in (capacity.enabled). */}}
{{- define "gpushift.capacityConfigMapName" -}}
{{- include "gpushift.fullname" . }}-gpu-capacity
{{- end }}

{{- define "gpushift.sidecarClusterRoleName" -}}
{{- include "gpushift.fullname" . }}-notebook-sidecar
{{- end }}

{{- define "gpushift.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "gpushift.selfManaged" -}}
{{- if eq .Values.certs.mode "selfManaged" }}true{{ end }}
{{- end }}

{{/*
Namespaces the webhook configuration never selects: kube-system, the release
namespace and config.excluded_namespaces (which the webhook also checks in code).
*/}}
{{- define "gpushift.excludedNamespaces" -}}
{{- $ns := list "kube-system" }}
{{- range .Values.config.excluded_namespaces }}
{{- $ns = append $ns . }}
{{- end }}
{{- $ns = append $ns .Release.Namespace }}
{{- toJson (uniq $ns) }}
{{- end }}

{{/*
Hardened container securityContext; the argument is the UID.
*/}}
{{- define "gpushift.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Hardened pod securityContext; the argument is the UID.
*/}}
{{- define "gpushift.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Fail early on values the webhook or Kubernetes would refuse.
*/}}
{{- define "gpushift.validate" -}}
{{- if not (has .Values.certs.mode (list "selfManaged" "certManager")) }}
{{- fail (printf "certs.mode must be selfManaged or certManager, not %q" .Values.certs.mode) }}
{{- end }}
{{- if not (has .Values.enablement.mode (list "opt-in" "cluster-wide")) }}
{{- fail (printf "enablement.mode must be opt-in or cluster-wide, not %q" .Values.enablement.mode) }}
{{- end }}
{{- $t := int .Values.webhook.timeoutSeconds }}
{{- if or (lt $t 1) (gt $t 30) }}
{{- fail "webhook.timeoutSeconds must be between 1 and 30" }}
{{- end }}
{{- if and .Values.webhook.urlOverride (not (hasPrefix "https://" .Values.webhook.urlOverride)) }}
{{- fail "webhook.urlOverride must start with https://" }}
{{- end }}
{{- $never := concat (list "kube-system" .Release.Namespace) .Values.config.excluded_namespaces }}
{{- if has .Values.tests.namespace $never }}
{{- fail (printf "tests.namespace %q is never injected (kube-system, the release namespace and config.excluded_namespaces are not): name a namespace where injection is enabled" .Values.tests.namespace) }}
{{- end }}
{{- end }}

{{/* The pre-delete hook that cleans up on helm uninstall (templates/cleanup-hook.yaml). */}}
{{- define "gpushift.cleanupName" -}}
{{- include "gpushift.fullname" . }}-cleanup
{{- end }}

{{/* The helm test (templates/tests/injection-test.yaml). */}}
{{- define "gpushift.testName" -}}
{{- include "gpushift.fullname" . }}-test
{{- end }}

{{/*
Metadata of the cleanup Job's pod template. Istio's proxy is kept out, as from the
webhook's pods: a proxy container would keep a finished hook pod from completing.
*/}}
{{- define "gpushift.hookPodMetadata" -}}
annotations:
  sidecar.istio.io/inject: "false"
labels:
  {{- include "gpushift.labels" . | nindent 2 }}
  {{- with .Values.hookPodLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
What the hook pods (cleanup Job, helm test) share with the webhook's pods: pull secrets,
placement and the hardened securityContext.
*/}}
{{- define "gpushift.hookPodSpec" -}}
restartPolicy: Never
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- if .Values.podSecurityContext }}
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
  {{- else }}
  {{- include "gpushift.podSecurityContext" 65532 | nindent 2 }}
  {{- end }}
{{- end }}

{{- define "gpushift.hookContainerSecurityContext" -}}
{{- if .Values.containerSecurityContext }}
{{- toYaml .Values.containerSecurityContext }}
{{- else }}
{{- include "gpushift.containerSecurityContext" 65532 }}
{{- end }}
{{- end }}
