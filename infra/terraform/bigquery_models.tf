# The model registry for analysts: BigQuery's `models` view, the columns of `fmnist model list`
# and of `fmnist query`'s models view, so predictions join the figures of the model that made
# them (on model_version).
#
#   model_versions_files   every version's version.json: its row on one JSON line, written by
#                          training beside metrics.json (components/contracts/model_versions.py)
#   model_latest_files     the LATEST pointer: one line naming the published version
#   models                 one row per version, is_latest from LATEST

locals {
  models_uri = "gs://${google_storage_bucket.models.name}"
}

resource "google_bigquery_table" "model_versions_files" {
  # checkov:skip=CKV_GCP_80: an external table stores no data in BigQuery; the models bucket is the place for encryption
  dataset_id          = google_bigquery_dataset.fmnist.dataset_id
  table_id            = "model_versions_files"
  description         = "Every model version's version.json (one line each); use the models view."
  deletion_protection = true
  depends_on          = [google_project_service.apis]
  schema = jsonencode([
    { name = "model_version", type = "STRING", mode = "NULLABLE" },
    { name = "test_accuracy", type = "FLOAT", mode = "NULLABLE" },
    { name = "test_ece", type = "FLOAT", mode = "NULLABLE", description = "expected calibration error on the test split" },
    { name = "architecture", type = "STRING", mode = "NULLABLE" },
    { name = "trained_at", type = "TIMESTAMP", mode = "NULLABLE" },
    { name = "verdict", type = "STRING", mode = "NULLABLE", description = "passed, forced, failed quality gate, failed champion gate" },
    { name = "champion_version", type = "STRING", mode = "NULLABLE", description = "the published version it was compared with" },
    { name = "manifest_digest", type = "STRING", mode = "NULLABLE", description = "the data set it was trained on" },
    { name = "model_uri", type = "STRING", mode = "NULLABLE" },
  ])

  external_data_configuration {
    source_format         = "NEWLINE_DELIMITED_JSON"
    autodetect            = false
    source_uris           = ["${local.models_uri}/*/version.json"]
    ignore_unknown_values = true
    max_bad_records       = 1000000 # one damaged file is one skipped row, never fatal to every query
  }
}

resource "google_bigquery_table" "model_latest_files" {
  # checkov:skip=CKV_GCP_80: an external table stores no data in BigQuery; the models bucket is the place for encryption
  dataset_id          = google_bigquery_dataset.fmnist.dataset_id
  table_id            = "model_latest_files"
  description         = "The LATEST pointer of the model registry (one line); use the models view."
  deletion_protection = true
  depends_on          = [google_project_service.apis]
  schema              = jsonencode([{ name = "model_version", type = "STRING", mode = "NULLABLE" }])

  external_data_configuration {
    source_format = "CSV"
    autodetect    = false
    source_uris   = ["${local.models_uri}/LATEST"]
    csv_options {
      quote = ""
    }
  }
}

resource "google_bigquery_table" "models" {
  # checkov:skip=CKV_GCP_80: a view stores no data; the models bucket is the place for encryption
  dataset_id          = google_bigquery_dataset.fmnist.dataset_id
  table_id            = "models"
  description         = "One row per model version: accuracy, ECE, architecture, trained at, gate verdict, is_latest."
  deletion_protection = true
  depends_on          = [google_project_service.apis]
  view {
    use_legacy_sql = false
    query          = <<-SQL
      SELECT versions.model_version, test_accuracy, test_ece, architecture, trained_at, verdict, champion_version,
             versions.model_version IN (SELECT TRIM(model_version) FROM `${local.dataset}.${google_bigquery_table.model_latest_files.table_id}`) AS is_latest,
             manifest_digest, model_uri
      FROM `${local.dataset}.${google_bigquery_table.model_versions_files.table_id}` AS versions
      WHERE versions.model_version IS NOT NULL
    SQL
  }
}

# BigQuery reads the external tables' files with the querying analyst's own storage rights.
resource "google_storage_bucket_iam_member" "analysts_read_models" {
  for_each = toset(var.analysts)
  bucket   = google_storage_bucket.models.name
  role     = "roles/storage.objectViewer"
  member   = each.value

  depends_on = [google_project_service.apis]
}
