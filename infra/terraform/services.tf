# The APIs the resources below and the jobs use. Every resource of a type that needs one
# depends on google_project_service.apis (tests/test_infra.py checks it), so a fresh project
# applies in one go. Disabling them on destroy could break other users of the project, so
# destroy leaves them on. Service Usage itself must be on already (it is in new projects).
locals {
  apis = {
    "aiplatform.googleapis.com"           = "Vertex AI Pipelines: runs and schedules"
    "artifactregistry.googleapis.com"     = "the image repository"
    "bigquery.googleapis.com"             = "the dataset, external tables and views"
    "cloudresourcemanager.googleapis.com" = "project IAM grants and audit configuration"
    "compute.googleapis.com"              = "the Dataflow network, subnetwork and firewall rule, and the workers' VMs"
    "dataflow.googleapis.com"             = "the scoring jobs"
    "iam.googleapis.com"                  = "service accounts and their IAM grants"
    "logging.googleapis.com"              = "the tasks' and workers' logs"
    "monitoring.googleapis.com"           = "the Dataflow workers' metrics"
    "storage.googleapis.com"              = "the buckets"
  }
}

resource "google_project_service" "apis" {
  for_each           = local.apis
  service            = each.key
  disable_on_destroy = false
}

# Data Access audit logs for Cloud Storage (every read and write of an object), only when asked:
# they are billed by volume, and an organization often sets them for all projects already.
# google_project_iam_audit_config is authoritative for its one service (storage.googleapis.com)
# and leaves other services' audit configs alone; "allServices" entries set elsewhere still
# apply (the union of both). Turn it on only where nothing else manages Cloud Storage's entry.
resource "google_project_iam_audit_config" "storage" {
  count   = var.storage_data_access_logs ? 1 : 0
  project = var.project_id
  service = "storage.googleapis.com"
  audit_log_config {
    log_type = "DATA_READ"
  }
  audit_log_config {
    log_type = "DATA_WRITE"
  }

  depends_on = [google_project_service.apis]
}
