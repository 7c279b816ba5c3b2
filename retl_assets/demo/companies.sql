SELECT CAST(id AS VARCHAR) AS "groupId", name, domain, industry, employees
FROM companies
