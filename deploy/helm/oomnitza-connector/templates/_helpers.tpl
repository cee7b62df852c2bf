{{- define "connector.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "connector.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* A section name as a Kubernetes name: ldap.Contractors -> ldap-contractors */}}
{{- define "connector.sectionSlug" -}}
{{- . | lower | replace "." "-" | replace "_" "-" | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "connector.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "connector.configMapName" -}}
{{- .Values.existingConfigMap | default (printf "%s-config" (include "connector.fullname" .)) -}}
{{- end -}}

{{- define "connector.stateClaim" -}}
{{- .Values.state.existingClaim | default (printf "%s-state" (include "connector.fullname" .)) -}}
{{- end -}}

{{/* The container spec shared by every workload; pass (dict "root" $ "args" list "name" string),
     optionally "logDir" (the folder under /data/logs; default: the name) and "ports" */}}
{{- define "connector.container" -}}
- name: {{ .name }}
  image: {{ include "connector.image" .root }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  args:
  {{- range .args }}
    - {{ . | quote }}
  {{- end }}
  env:
    # Each workload its own log files on the state volume (processes must not rotate each other's).
    - name: OOMNITZA_LOG_DIR
      value: {{ printf "/data/logs/%s" (.logDir | default .name) | quote }}
  {{- with .root.Values.secretEnv }}
  envFrom:
  {{- range . }}
    - secretRef:
        name: {{ . }}
  {{- end }}
  {{- end }}
  {{- with .ports }}
  ports:
  {{- toYaml . | nindent 4 }}
  {{- end }}
  resources:
    {{- toYaml .root.Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml .root.Values.securityContext | nindent 4 }}
  volumeMounts:
    - {name: config, mountPath: /config, readOnly: true}
    - {name: state, mountPath: /data}
    - {name: tmp, mountPath: /tmp}
{{- end -}}

{{- define "connector.volumes" -}}
- name: config
  configMap:
    name: {{ include "connector.configMapName" . }}
- name: state
  {{- if or .Values.state.existingClaim .Values.state.create }}
  persistentVolumeClaim:
    claimName: {{ include "connector.stateClaim" . }}
  {{- else }}
  emptyDir: {}
  {{- end }}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "connector.podSpecCommon" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
