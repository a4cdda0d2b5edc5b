# The APIs the resources below and the jobs use; disabling them on destroy could break
# other users of the project, so destroy leaves them on.
resource "google_project_service" "apis" {
  for_each = toset([
    "aiplatform.googleapis.com", # Vertex AI Pipelines
    "artifactregistry.googleapis.com",
    "bigquery.googleapis.com",
    "dataflow.googleapis.com",
    "iam.googleapis.com",
    "storage.googleapis.com",
  ])
  service            = each.value
  disable_on_destroy = false
}

# Data Access audit logs for Cloud Storage: every read and write of an object is logged,
# which is why the buckets below need no separate usage-log bucket.
resource "google_project_iam_audit_config" "storage" {
  project = var.project_id
  service = "storage.googleapis.com"
  audit_log_config {
    log_type = "DATA_READ"
  }
  audit_log_config {
    log_type = "DATA_WRITE"
  }
}
