# Four buckets, one per kind of data, so that retention and access differ where they should:
#   <project>-data       incoming/<YYYY-MM-DD>/*.tfrecord shards to score (and raw data sets)
#   <project>-models     the model registry: <version>/ folders and the LATEST pointer
#   <project>-tables     predictions/ and errors/ (Hive-partitioned Parquet), runs/ summaries,
#                        _staging/ (the scoring runs' scratch, kept a day once replaced),
#                        _schemas/ (the external tables' reference Parquet files, bigquery.tf)
#   <project>-pipelines  KFP pipeline root (task artifacts) and Dataflow temp/staging files
# All: uniform bucket-level access (IAM only, no object ACLs), public access prevented,
# Google-managed encryption.

resource "google_storage_bucket" "data" {
  # checkov:skip=CKV_GCP_62: object reads and writes are recorded by Data Access audit logs (var.storage_data_access_logs, or the organization's own audit config), not a usage-log bucket
  name                        = "${var.project_id}-data"
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  # Shards are scored the day after they arrive; backfills reach back months, not years.
  lifecycle_rule {
    condition {
      age            = var.incoming_retention_days
      matches_prefix = ["incoming/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket" "models" {
  # checkov:skip=CKV_GCP_62: object reads and writes are recorded by Data Access audit logs (var.storage_data_access_logs, or the organization's own audit config), not a usage-log bucket
  name                        = "${var.project_id}-models"
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  # Every overwrite of LATEST keeps the previous pointer restorable (a rollback is a copy).
  versioning {
    enabled = true
  }

  # Model versions themselves are small and are lineage for the tables: kept. Old copies of
  # overwritten objects (mostly LATEST) go after the retention period.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket" "tables" {
  # checkov:skip=CKV_GCP_62: object reads and writes are recorded by Data Access audit logs (var.storage_data_access_logs, or the organization's own audit config), not a usage-log bucket
  name                        = "${var.project_id}-tables"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  # The analysts' views read every run's files, old dates included: a fixed move to NEARLINE
  # would bill a retrieval on every such query. Autoclass moves only what nobody reads to
  # colder classes and back on the first read, with no retrieval or early-deletion fees.
  autoclass {
    enabled                = true
    terminal_storage_class = "NEARLINE"
  }

  versioning {
    enabled = true
  }

  # A rerun replaces its partition; the replaced files stay restorable for a while.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_retention_days
    }
    action {
      type = "Delete"
    }
  }

  # Staging (_staging/<run>/<attempt>/...) is scratch: every staged part is deleted or moved
  # once published, and its old version is kept one day, not the tables' retention period.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
      matches_prefix             = ["_staging"]
    }
    action {
      type = "Delete"
    }
  }

  # Leftovers of attempts killed before cleaning up (no attempt runs for days): deleted.
  lifecycle_rule {
    condition {
      age            = var.staging_retention_days
      matches_prefix = ["_staging"]
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket" "pipelines" {
  # checkov:skip=CKV_GCP_62: object reads and writes are recorded by Data Access audit logs (var.storage_data_access_logs, or the organization's own audit config), not a usage-log bucket
  # checkov:skip=CKV_GCP_78: scratch space (task artifacts, Dataflow temp/staging) recreated by every run and deleted after scratch_retention_days; versions would only keep garbage
  name                        = "${var.project_id}-pipelines"
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  # Everything here is scratch. No pipeline task is cached (components/cloud/pipelines.py): a
  # cache hit would hand on an artifact this rule may have deleted.
  lifecycle_rule {
    condition {
      age = var.scratch_retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}
