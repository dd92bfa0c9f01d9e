-- Report views over the current emission lines: by day, vendor, Scope 3 category, method and
-- data quality. Excluded lines appear with a NULL category; unmapped spend with NULL kgco2e.
-- depends: 0003.provenance

CREATE VIEW erp_connector_service.emissions_by_day AS
SELECT connection, transaction_date, count(*) AS lines, sum(amount_usd) AS amount_usd,
       sum(kgco2e) AS kgco2e,
       sum(amount_usd) FILTER (WHERE mapping_rule = 'unmapped') AS unmapped_amount_usd
FROM erp_connector_service.emission_lines
GROUP BY connection, transaction_date;

CREATE VIEW erp_connector_service.emissions_by_vendor AS
SELECT connection, vendor_id, date_trunc('month', transaction_date)::date AS month,
       count(*) AS lines, sum(amount_usd) AS amount_usd, sum(kgco2e) AS kgco2e
FROM erp_connector_service.emission_lines
GROUP BY connection, vendor_id, date_trunc('month', transaction_date);

CREATE VIEW erp_connector_service.emissions_by_category AS
SELECT connection, date_trunc('month', transaction_date)::date AS month, scope3_category,
       excluded_reason, count(*) AS lines, sum(amount_usd) AS amount_usd, sum(kgco2e) AS kgco2e
FROM erp_connector_service.emission_lines
GROUP BY connection, date_trunc('month', transaction_date), scope3_category, excluded_reason;

CREATE VIEW erp_connector_service.emissions_by_method_quality AS
SELECT connection, date_trunc('month', transaction_date)::date AS month, method,
       data_quality_score, count(*) AS lines, sum(amount_usd) AS amount_usd,
       sum(kgco2e) AS kgco2e
FROM erp_connector_service.emission_lines
GROUP BY connection, date_trunc('month', transaction_date), method, data_quality_score;
