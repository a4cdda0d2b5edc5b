# The one image (`jobs`) and its Dataflow worker target (`worker`):
#   <region>-docker.pkg.dev/<project>/fmnist/jobs@sha256:...
resource "google_artifact_registry_repository" "images" {
  # checkov:skip=CKV_GCP_84: Google-managed encryption; the images hold public code and the public Fashion-MNIST data set, nothing a customer-managed key would protect further
  location      = var.region
  repository_id = "fmnist"
  description   = "fmnist-jobs images: jobs (KFP tasks) and worker (Dataflow SDK container)."
  format        = "DOCKER"

  # A pushed tag never moves: schedules and caches name images by digest, people by tag.
  docker_config {
    immutable_tags = true
  }

  # Untagged leftovers of interrupted pushes go; the 20 newest versions always stay.
  cleanup_policies {
    id     = "delete-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "2592000s" # 30 days
    }
  }
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 20
    }
  }

  depends_on = [google_project_service.apis]
}
