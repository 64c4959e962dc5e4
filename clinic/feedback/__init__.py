"""What patients see of and say about the clinic's physicians: the public directory of the
physicians who practise online (2022 supervision rules), ratings of completed visits
(满意度评价) and complaints (患者投诉) answered by the institution."""
