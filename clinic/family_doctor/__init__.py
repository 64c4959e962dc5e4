"""“互联网+”家庭医生签约服务: teams, service packages, contracts, follow-up plans, home readings.

Art. 2 of the 2018 measures names family-doctor contracts as the second kind of internet
diagnosis; Art. 15 says what the agreement must state. Only a primary-care institution
(configured level 基层) offers signing.
"""
