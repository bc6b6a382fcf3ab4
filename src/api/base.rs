//! `GET /v2/`: the API version check clients start with.

use actix_web::HttpResponse;

pub fn get() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body("{}")
}
