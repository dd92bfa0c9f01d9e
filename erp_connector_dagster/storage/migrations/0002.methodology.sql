-- Emission factor sets and their versions, so that a restatement can recalculate stored
-- results with a new version while the rows calculated with an older one stay queryable.
-- depends: 0001.core-tables

-- One row per (set, version): a version is immutable once stored.
CREATE TABLE erp_connector_service.factor_sets (
    factor_set      text NOT NULL,
    factor_version  text NOT NULL,
    dollar_year     smallint NOT NULL,
    unit            text NOT NULL,
    naics_vintage   smallint NOT NULL DEFAULT 2017,
    source          text NOT NULL,
    factor_count    integer NOT NULL,
    loaded_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (factor_set, factor_version)
);

-- The published factors of each version, keyed by NAICS code, values exactly as published.
CREATE TABLE erp_connector_service.emission_factors (
    factor_set      text NOT NULL,
    factor_version  text NOT NULL,
    code            text NOT NULL,
    title           text NOT NULL,
    value           numeric(20, 8) NOT NULL,
    unit            text NOT NULL,
    useeio_code     text NOT NULL,
    PRIMARY KEY (factor_set, factor_version, code),
    FOREIGN KEY (factor_set, factor_version)
        REFERENCES erp_connector_service.factor_sets (factor_set, factor_version)
);

-- Restatements look up current rows by factor set and date.
CREATE INDEX emission_calculations_current_factor
    ON erp_connector_service.emission_calculations (factor_set, transaction_date)
    WHERE is_current;
